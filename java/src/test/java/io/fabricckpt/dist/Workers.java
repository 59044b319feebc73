package io.fabricckpt.dist;

import io.fabricckpt.core.DistributedException;
import java.util.LinkedHashMap;
import java.util.Map;

/** What the multi-process test workers (DdpWorker, FsdpWorker) share. */
final class Workers {
    private Workers() {}

    interface Body {
        void run() throws Exception;
    }

    /**
     * Runs a worker: prints {@code done} when it succeeds; a failure prints {@code error: <message>},
     * {@code error-type: <class> [rank= operation=]} and {@code elapsed-ms=} (how long until it failed) and exits 1, which the tests read back.
     */
    static void run(Body body) throws Exception {
        long start = System.nanoTime();
        try {
            body.run();
        } catch (RuntimeException e) {
            System.out.println("error: " + e.getMessage());
            System.out.println("error-type: " + e.getClass().getSimpleName()
                    + (e instanceof DistributedException d ? " rank=" + d.rank() + " operation=" + d.operation() : ""));
            System.out.println("elapsed-ms=" + (System.nanoTime() - start) / 1_000_000);
            System.out.flush();
            System.exit(1);
        }
        System.out.println("done");
    }

    /** The fault modes: the last rank leaves (exit 0) or sleeps forever right after joining; others return. */
    static void faultOnLastRank(ProcessGroup group, boolean stall) throws InterruptedException {
        if (group.rank() != group.worldSize() - 1) {
            return;
        }
        System.out.println(stall ? "stalling before the save" : "leaving before the save");
        System.out.flush();
        if (stall) {
            Thread.sleep(Long.MAX_VALUE);
        }
        System.exit(0);
    }

    /** A training state as the tests save and load it: "model", "optimizer", "step", in that order. */
    static Map<String, Object> state(Object model, Object optimizer, long step) {
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("model", model);
        state.put("optimizer", optimizer);
        state.put("step", step);
        return state;
    }
}
