package streamkit.peers.kpl;

import com.amazonaws.auth.AWSStaticCredentialsProvider;
import com.amazonaws.auth.BasicAWSCredentials;
import com.amazonaws.services.kinesis.producer.KinesisProducer;
import com.amazonaws.services.kinesis.producer.KinesisProducerConfiguration;
import com.amazonaws.services.kinesis.producer.UserRecord;
import com.amazonaws.services.kinesis.producer.UserRecordResult;
import com.google.common.util.concurrent.ListenableFuture;
import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Puts {@code --records} user records (numbered from {@code --start}) through the real KPL
 * (aggregation on) and writes one JSON line per record, in put order, to {@code --out}:
 * {@code i}, {@code pk}, {@code ehk} (or null), {@code data}, and what the KPL reported:
 * {@code ok}, {@code shard}, {@code seq} (the KPL reports no sub-sequence number),
 * {@code attempts}. The record data is the JSON object
 * {@code {"i":<i>,"pk":"<pk>","pad":"xx..."}} of {@code --size} bytes (at least). Every
 * {@code --ehk-every}-th record (0: none) carries an explicit hash key. The first record
 * goes alone; the others follow {@code --warmup-ms} after it was acknowledged, once the
 * KPL's shard map is ready, so they are aggregated (the tests check that they were).
 * Exit code 0 when every put succeeded.
 */
public final class KplPeer {
    private KplPeer() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        int records = Integer.parseInt(a.get("records"));
        int start = Integer.parseInt(a.getOrDefault("start", "0"));
        int keys = Integer.parseInt(a.get("keys"));
        int size = Integer.parseInt(a.getOrDefault("size", "60"));
        int ehkEvery = Integer.parseInt(a.getOrDefault("ehk-every", "0"));
        String stream = a.get("stream");

        KinesisProducerConfiguration config = new KinesisProducerConfiguration()
                .setRegion(a.get("region"))
                .setKinesisEndpoint(a.get("host"))
                .setKinesisPort(Long.parseLong(a.get("port")))
                .setCloudwatchEndpoint(a.get("host"))
                .setCloudwatchPort(Long.parseLong(a.get("port")))
                .setStsEndpoint(a.get("host"))
                .setStsPort(Long.parseLong(a.get("port")))
                .setVerifyCertificate(false)
                .setMetricsLevel("none")
                .setLogLevel(a.getOrDefault("log-level", "warning"))
                .setCredentialsProvider(new AWSStaticCredentialsProvider(
                        new BasicAWSCredentials(a.get("access-key"), a.get("secret-key"))))
                .setAggregationEnabled(true)
                .setAggregationMaxCount(Long.parseLong(a.getOrDefault("aggregation-max-count", "50")))
                .setRecordMaxBufferedTime(Long.parseLong(a.getOrDefault("buffer-ms", "300")))
                .setMaxConnections(1)
                .setRequestTimeout(30000)
                .setRecordTtl(120000);
        KinesisProducer producer = new KinesisProducer(config);
        long warmup = Long.parseLong(a.getOrDefault("warmup-ms", "5000"));
        List<UserRecord> put = new ArrayList<>(records);
        List<String> payloads = new ArrayList<>(records);
        List<ListenableFuture<UserRecordResult>> futures = new ArrayList<>(records);
        for (int i = 0; i < records; i++) {
            int n = start + i;
            String pk = "pk-" + (n % keys);
            StringBuilder pad = new StringBuilder();
            String head = "{\"i\":" + n + ",\"pk\":\"" + pk + "\",\"pad\":\"";
            while (head.length() + pad.length() + 2 < size) {
                pad.append('x');
            }
            String data = head + pad + "\"}";
            String ehk = ehkEvery > 0 && n % ehkEvery == 0 ? String.valueOf(n * 7919L) : null;
            UserRecord r = new UserRecord(stream, pk, ehk,
                    ByteBuffer.wrap(data.getBytes(StandardCharsets.UTF_8)));
            put.add(r);
            payloads.add(data);
            futures.add(producer.addUserRecord(r));
            if (i == 0) {
                // The KPL builds a stream's shard map on its first record and sends records
                // unaggregated until the map is ready: let record 0 through, then wait.
                futures.get(0).get();
                Thread.sleep(warmup);
            }
        }
        producer.flushSync();
        boolean allOk = true;
        try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(Path.of(a.get("out"))))) {
            for (int i = 0; i < records; i++) {
                UserRecord r = put.get(i);
                UserRecordResult res = futures.get(i).get();
                allOk &= res.isSuccessful();
                String data = payloads.get(i);
                out.println("{\"i\":" + (start + i) + ",\"pk\":\"" + r.getPartitionKey() + "\",\"ehk\":"
                        + (r.getExplicitHashKey() == null ? "null" : "\"" + r.getExplicitHashKey() + "\"")
                        + ",\"data\":\"" + data.replace("\"", "\\\"") + "\",\"ok\":" + res.isSuccessful()
                        + ",\"shard\":\"" + res.getShardId() + "\",\"seq\":\"" + res.getSequenceNumber()
                        + "\",\"attempts\":" + res.getAttempts().size() + "}");
            }
        }
        producer.destroy();
        System.exit(allOk ? 0 : 1);
    }
}
