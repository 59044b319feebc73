package io.fabricckpt.dist;

/**
 * One process: it writes and reads its checkpoints alone (Lightning's {@code SingleDeviceStrategy});
 * collectives are trivial. Thread-safe (stateless).
 */
public final class SingleDevice implements Strategy {
    public static final SingleDevice INSTANCE = new SingleDevice();

    private SingleDevice() {}

    @Override
    public int globalRank() {
        return 0;
    }

    @Override
    public int worldSize() {
        return 1;
    }

    @Override
    public void barrier() {}

    @Override
    public boolean reduceBooleanDecision(boolean decision) {
        return decision;
    }

    @Override
    public String broadcast(String text, int src) {
        if (src != 0) {
            throw new IllegalArgumentException("source rank " + src + " is not in [0, 1)");
        }
        return text;
    }

    @Override
    public String toString() {
        return "SingleDevice";
    }
}
