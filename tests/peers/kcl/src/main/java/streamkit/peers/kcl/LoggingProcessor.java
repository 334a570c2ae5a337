package streamkit.peers.kcl;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import software.amazon.kinesis.exceptions.KinesisClientLibException;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.processor.RecordProcessorCheckpointer;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.retrieval.KinesisClientRecord;

/**
 * One shard's processor: logs every record (flushed before any checkpoint covering it, so a
 * line means "processed"), then checkpoints at the end of the batch once {@code every}
 * records are unsaved or {@code intervalMillis} passed since the last checkpoint.
 */
final class LoggingProcessor implements ShardRecordProcessor {
    private final JsonLines records;
    private final JsonLines events;
    private final int every;
    private final long intervalNanos;
    private String shardId = "?";
    private String lastSeq = "none";
    private int unsaved;
    private long lastCheckpointNanos = System.nanoTime();

    LoggingProcessor(JsonLines records, JsonLines events, int every, long intervalMillis) {
        this.records = records;
        this.events = events;
        this.every = every;
        this.intervalNanos = intervalMillis * 1_000_000L;
    }

    @Override
    public void initialize(InitializationInput input) {
        shardId = input.shardId();
        events.write(true, "event", "initialize", "shard", shardId,
                "start", input.extendedSequenceNumber().sequenceNumber(),
                "sub", input.extendedSequenceNumber().subSequenceNumber());
    }

    @Override
    public void processRecords(ProcessRecordsInput input) {
        for (KinesisClientRecord r : input.records()) {
            records.write(false, "shard", shardId, "seq", r.sequenceNumber(),
                    "sub", r.subSequenceNumber(), "pk", r.partitionKey(), "data", text(r.data()));
            lastSeq = r.sequenceNumber();
        }
        records.flush();
        unsaved += input.records().size();
        boolean due = intervalNanos > 0 && System.nanoTime() - lastCheckpointNanos >= intervalNanos;
        if (unsaved > 0 && (unsaved >= every || due)) {
            checkpoint(input.checkpointer(), lastSeq);
        }
    }

    private void checkpoint(RecordProcessorCheckpointer checkpointer, String position) {
        try {
            checkpointer.checkpoint();
            unsaved = 0;
            lastCheckpointNanos = System.nanoTime();
            events.write(true, "event", "checkpoint", "shard", shardId, "seq", position);
        } catch (KinesisClientLibException | RuntimeException e) {
            events.write(true, "event", "checkpoint_failed", "shard", shardId, "error", e.toString());
        }
    }

    @Override
    public void leaseLost(LeaseLostInput input) {
        events.write(true, "event", "processor_lease_lost", "shard", shardId);
    }

    @Override
    public void shardEnded(ShardEndedInput input) {
        events.write(true, "event", "shard_ended", "shard", shardId);
        checkpoint(input.checkpointer(), "SHARD_END");
    }

    @Override
    public void shutdownRequested(ShutdownRequestedInput input) {
        events.write(true, "event", "shutdown_requested", "shard", shardId);
        checkpoint(input.checkpointer(), lastSeq);
    }

    private static String text(ByteBuffer data) {
        ByteBuffer copy = data.duplicate();
        byte[] bytes = new byte[copy.remaining()];
        copy.get(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }
}
