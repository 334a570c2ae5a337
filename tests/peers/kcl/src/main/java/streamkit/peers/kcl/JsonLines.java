package streamkit.peers.kcl;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;

/**
 * Appends one JSON object per line to a file, in the format of streamkit's test worker
 * (consumer_worker_proc.py): every line has "worker" and a wall-clock "t" in seconds.
 * Thread-safe: KCL calls record processors of different shards from different threads.
 */
final class JsonLines implements AutoCloseable {
    private final BufferedWriter out;
    private final String worker;

    JsonLines(Path path, String worker) throws IOException {
        this.out = Files.newBufferedWriter(
                path, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        this.worker = worker;
    }

    /** Writes one line from alternating keys and values (strings or numbers); flushes if asked. */
    synchronized void write(boolean flush, Object... keysAndValues) {
        StringBuilder line = new StringBuilder(128);
        line.append("{\"worker\": ").append(quote(worker));
        line.append(", \"t\": ").append(System.currentTimeMillis() / 1000.0);
        for (int i = 0; i + 1 < keysAndValues.length; i += 2) {
            line.append(", ").append(quote(String.valueOf(keysAndValues[i]))).append(": ");
            Object value = keysAndValues[i + 1];
            line.append(value instanceof Number ? value.toString() : quote(String.valueOf(value)));
        }
        line.append("}\n");
        try {
            out.write(line.toString());
            if (flush) {
                out.flush();
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    synchronized void flush() {
        try {
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public synchronized void close() throws IOException {
        out.close();
    }

    private static final Map<Character, String> ESCAPES = Map.of(
            '"', "\\\"", '\\', "\\\\", '\n', "\\n", '\r', "\\r", '\t', "\\t");

    static String quote(String text) {
        StringBuilder quoted = new StringBuilder(text.length() + 2).append('"');
        for (char c : text.toCharArray()) {
            String escape = ESCAPES.get(c);
            if (escape != null) {
                quoted.append(escape);
            } else if (c < 0x20) {
                quoted.append(String.format("\\u%04x", (int) c));
            } else {
                quoted.append(c);
            }
        }
        return quoted.append('"').toString();
    }
}
