package streamkit.peers.kcl;

import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * A Java KCL 2.x consumer for streamkit's interoperability tests.
 *
 * <pre>
 * java -Xmx256m -jar kcl-peer.jar --endpoint http://127.0.0.1:4566 --stream S --app A
 *     --worker-id W --out records.jsonl --events events.jsonl
 *     [--region us-east-1] [--checkpoint-every 1] [--checkpoint-interval-ms 0]
 *     [--failover-ms 10000] [--idle-ms 1500] [--shard-sync-ms 60000]
 *     [--parent-poll-ms 10000] [--max-steal 1]
 * </pre>
 *
 * <p>Kinesis, DynamoDB and CloudWatch clients all point at {@code --endpoint} (LocalStack);
 * metrics are off (NullMetricsFactory, level NONE). Polling retrieval (GetRecords), initial
 * position TRIM_HORIZON, lease table = application name. Every record is appended to
 * {@code --out}, every lifecycle step and checkpoint to {@code --events}, as JSON lines in
 * the format of streamkit's worker process. SIGTERM shuts the scheduler down gracefully
 * (shutdownRequested checkpoints each shard) and exits 0. SIGKILL is what the tests use for
 * a crash.
 */
public final class KclPeer {
    private static final Logger log = LoggerFactory.getLogger(KclPeer.class);

    private KclPeer() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parse(argv);
        String endpoint = required(args, "endpoint");
        String stream = required(args, "stream");
        String app = required(args, "app");
        String workerId = required(args, "worker-id");
        JsonLines records = new JsonLines(Path.of(required(args, "out")), workerId);
        JsonLines events = new JsonLines(Path.of(required(args, "events")), workerId);

        Region region = Region.of(args.getOrDefault("region", "us-east-1"));
        StaticCredentialsProvider credentials = StaticCredentialsProvider.create(AwsBasicCredentials.create(
                args.getOrDefault("access-key", "test"), args.getOrDefault("secret-key", "test")));
        URI uri = URI.create(endpoint);
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder()
                .endpointOverride(uri).region(region).credentialsProvider(credentials)
                .httpClientBuilder(http()).build();
        DynamoDbAsyncClient dynamo = DynamoDbAsyncClient.builder()
                .endpointOverride(uri).region(region).credentialsProvider(credentials)
                .httpClientBuilder(http()).build();
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .endpointOverride(uri).region(region).credentialsProvider(credentials)
                .httpClientBuilder(http()).build();

        int every = Integer.parseInt(args.getOrDefault("checkpoint-every", "1"));
        long interval = Long.parseLong(args.getOrDefault("checkpoint-interval-ms", "0"));
        ConfigsBuilder configs = new ConfigsBuilder(stream, app, kinesis, dynamo, cloudWatch, workerId,
                () -> new LoggingProcessor(records, events, every, interval));

        long failover = Long.parseLong(args.getOrDefault("failover-ms", "10000"));
        long idle = Long.parseLong(args.getOrDefault("idle-ms", "1500"));
        long shardSync = Long.parseLong(args.getOrDefault("shard-sync-ms", "60000"));
        long parentPoll = Long.parseLong(args.getOrDefault("parent-poll-ms", "10000"));
        int maxSteal = Integer.parseInt(args.getOrDefault("max-steal", "1"));
        InitialPositionInStreamExtended trimHorizon =
                InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON);

        Scheduler scheduler = new Scheduler(
                configs.checkpointConfig(),
                configs.coordinatorConfig().parentShardPollIntervalMillis(parentPoll),
                configs.leaseManagementConfig()
                        .failoverTimeMillis(failover)
                        .shardSyncIntervalMillis(shardSync)
                        .maxLeasesToStealAtOneTime(maxSteal)
                        .initialPositionInStream(trimHorizon),
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsFactory(new NullMetricsFactory()).metricsLevel(MetricsLevel.NONE),
                configs.processorConfig(),
                configs.retrievalConfig()
                        .initialPositionInStreamExtended(trimHorizon)
                        .retrievalSpecificConfig(new PollingConfig(stream, kinesis).idleTimeBetweenReadsInMillis(idle)));

        Thread runner = new Thread(scheduler, "kcl-scheduler");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log.info("SIGTERM: graceful shutdown of worker {}", workerId);
            events.write(true, "event", "stopping");
            try {
                scheduler.startGracefulShutdown().get(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                log.warn("graceful shutdown did not complete: {}", e.toString());
            }
            events.write(true, "event", "stopped");
            try {
                records.close();
                events.close();
            } catch (Exception e) {
                log.warn("closing logs: {}", e.toString());
            }
            Runtime.getRuntime().halt(0); // a graceful stop exits 0, not 143
        }, "kcl-shutdown"));
        events.write(true, "event", "started", "kcl", Scheduler.class.getPackage().getImplementationVersion() + "");
        log.info("KCL worker {} on stream {} app {} at {}", workerId, stream, app, endpoint);
        runner.start();
        runner.join();
    }

    private static NettyNioAsyncHttpClient.Builder http() {
        return NettyNioAsyncHttpClient.builder()
                .protocol(Protocol.HTTP1_1)
                .maxConcurrency(64)
                .connectionTimeout(Duration.ofSeconds(5));
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --name value pairs, got " + argv[i]);
            }
            args.put(argv[i].substring(2), argv[++i]);
        }
        return args;
    }

    private static String required(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null) {
            throw new IllegalArgumentException("missing --" + name);
        }
        return value;
    }
}
