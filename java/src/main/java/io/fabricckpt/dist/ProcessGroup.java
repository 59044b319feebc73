package io.fabricckpt.dist;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.DistributedException;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeErrors;
import io.fabricckpt.internal.NativeProcessGroup;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.Objects;

/**
 * This process's membership of a c10d process group: libtorch's {@code TCPStore} rendezvous (rank 0
 * serves it at the master address, as torchrun's {@code MASTER_ADDR}/{@code MASTER_PORT}) and a Gloo
 * process group over it, the same classes {@code torch.distributed} uses.
 *
 * <p>Every operation but {@link #rank()}, {@link #worldSize()}, {@link #timeout()} and
 * {@link #close()} is collective: all ranks call it, in the same order. A rank that died or stalls
 * makes the others throw a {@link DistributedException} within the timeout (sooner when its
 * connection closes). Calls on one group are serialised; it is safe to share between threads, but
 * collectives from several threads must still be issued in the same order on every rank.
 */
public final class ProcessGroup implements AutoCloseable {
    /** torch.distributed's default for Gloo groups. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofMinutes(30);

    private final NativeProcessGroup handle;
    private final int rank;
    private final int worldSize;
    private final Duration timeout;
    private final String master;
    private volatile boolean closed;
    private BackgroundSaves backgroundSaves; // created by the first background save, closed first

    private ProcessGroup(NativeProcessGroup handle, String master, Duration timeout) {
        this.handle = handle;
        this.rank = handle.rank();
        this.worldSize = handle.worldSize();
        this.timeout = timeout;
        this.master = master;
    }

    /**
     * Joins the group that the environment describes, as torchrun sets it: {@code MASTER_ADDR},
     * {@code MASTER_PORT}, {@code RANK}, {@code WORLD_SIZE}. The timeout is
     * {@code FABRICCKPT_DIST_TIMEOUT} (seconds) when set, else {@link #DEFAULT_TIMEOUT}.
     */
    public static ProcessGroup fromEnvironment() {
        String seconds = System.getenv("FABRICCKPT_DIST_TIMEOUT");
        Duration timeout = DEFAULT_TIMEOUT;
        if (seconds != null && !seconds.isBlank()) {
            try {
                timeout = Duration.ofMillis(Math.round(Double.parseDouble(seconds.trim()) * 1000));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("FABRICCKPT_DIST_TIMEOUT=" + seconds + " is not a number of seconds");
            }
        }
        return fromEnvironment(timeout);
    }

    /** {@link #fromEnvironment()} with an explicit timeout. */
    public static ProcessGroup fromEnvironment(Duration timeout) {
        return fromEnvironment(System.getenv(), timeout);
    }

    /** {@link #fromEnvironment()} reading the variables from {@code env}. */
    public static ProcessGroup fromEnvironment(Map<String, String> env, Duration timeout) {
        String host = env.getOrDefault("MASTER_ADDR", "127.0.0.1");
        int port = intVariable(env, "MASTER_PORT", 29500);
        int rank = intVariable(env, "RANK", 0);
        int worldSize = intVariable(env, "WORLD_SIZE", 1);
        return connect(host, port, rank, worldSize, timeout);
    }

    private static int intVariable(Map<String, String> env, String name, int fallback) {
        String value = env.get(name);
        if (value == null || value.isBlank()) {
            return fallback;
        }
        try {
            return Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + "=" + value + " is not an integer");
        }
    }

    /**
     * Joins a group of {@code worldSize} processes whose rank 0 serves the store at
     * {@code host:port}. Blocks until every rank has joined.
     *
     * @throws DistributedException when the rendezvous does not complete within {@code timeout}
     * @throws IllegalArgumentException for a rank outside {@code [0, worldSize)}, a bad port or timeout
     */
    public static ProcessGroup connect(String host, int port, int rank, int worldSize, Duration timeout) {
        Objects.requireNonNull(host, "host");
        Objects.requireNonNull(timeout, "timeout");
        if (worldSize < 1 || rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("rank " + rank + " is not in [0, " + worldSize + ")");
        }
        if (port < 1 || port > 65535) {
            throw new IllegalArgumentException("port " + port + " is not in [1, 65535]");
        }
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("the timeout must be positive, not " + timeout);
        }
        byte[] hostBytes = host.getBytes(StandardCharsets.UTF_8);
        try {
            NativeProcessGroup handle = new NativeProcessGroup(hostBytes, hostBytes.length, port, rank, worldSize,
                    timeout.toMillis());
            return new ProcessGroup(handle, host + ":" + port, timeout);
        } catch (RuntimeException e) {
            throw distributed(e, rank, "rendezvous at " + host + ":" + port);
        }
    }

    /** A native failure as a DistributedException (the C++ side names the rank and operation when it can). */
    private static DistributedException distributed(RuntimeException e, int rank, String operation) {
        CheckpointException translated = NativeErrors.translate(e);
        return translated instanceof DistributedException d ? d
                : new DistributedException(translated.getMessage(), rank, operation, e);
    }

    public int rank() {
        return rank;
    }

    public int worldSize() {
        return worldSize;
    }

    /** The timeout of the rendezvous and of every collective. */
    public Duration timeout() {
        return timeout;
    }

    /** Waits until every rank has called it. */
    public void barrier() {
        call(() -> {
            handle.barrier();
            return null;
        });
    }

    /** True on every rank when {@code ok} is true on every rank. */
    public boolean allAgree(boolean ok) {
        return call(() -> handle.allAgree(ok));
    }

    /** The sum of {@code value} over all ranks, on every rank. */
    public long allReduceSum(long value) {
        return call(() -> handle.allReduceSum(value));
    }

    /** Rank {@code src}'s bytes, on every rank ({@code bytes} is ignored on the others; may be null there). */
    public byte[] broadcast(byte[] bytes, int src) {
        if (src < 0 || src >= worldSize) {
            throw new IllegalArgumentException("source rank " + src + " is not in [0, " + worldSize + ")");
        }
        byte[] data = rank == src ? Objects.requireNonNull(bytes, "bytes") : new byte[0];
        return call(() -> NativeCalls.bytes(handle.broadcastBytes(data, data.length, src)));
    }

    /** Rank {@code src}'s string, on every rank. */
    public String broadcast(String text, int src) {
        byte[] bytes = rank == src ? Objects.requireNonNull(text, "text").getBytes(StandardCharsets.UTF_8) : null;
        return new String(broadcast(bytes, src), StandardCharsets.UTF_8);
    }

    /**
     * The native group, for the strategies' own collective operations (sharded saves and gathers).
     */
    NativeProcessGroup nativeGroup() {
        if (closed) {
            throw new IllegalStateException("rank " + rank + ": the process group is closed");
        }
        return handle;
    }

    /**
     * The background saves of this group ({@code saveAsync} under its strategies), over a background
     * group of their own made on first use. Collective on first use: every rank's first background
     * save comes at the same point of its sequence of collectives.
     */
    synchronized BackgroundSaves backgroundSaves() {
        if (backgroundSaves == null) {
            byte[] prefix = "async-save".getBytes(StandardCharsets.UTF_8);
            NativeProcessGroup background = call(() -> new NativeProcessGroup(handle, prefix, prefix.length));
            backgroundSaves = new BackgroundSaves(new ProcessGroup(background, master + " (background saves)",
                    timeout));
        }
        return backgroundSaves;
    }

    /**
     * Leaves the group: waits for its background saves first, then releases the Gloo group and the
     * store (rank 0 stops serving it). Idempotent.
     */
    @Override
    public void close() {
        BackgroundSaves saves;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            saves = backgroundSaves;
        }
        if (saves != null) {
            saves.close(); // its collectives need the others' background groups, and this one's store
        }
        handle.close();
        handle.deallocate();
    }

    @Override
    public String toString() {
        return "ProcessGroup[rank " + rank + " of " + worldSize + ", master " + master + ", timeout " + timeout + "]";
    }

    private interface Collective<T> {
        T run();
    }

    private <T> T call(Collective<T> op) {
        if (closed) {
            throw new IllegalStateException("rank " + rank + ": the process group is closed");
        }
        try {
            return op.run();
        } catch (RuntimeException e) {
            throw distributed(e, rank, "collective operation");
        }
    }
}
