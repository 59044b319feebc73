package io.fabricckpt.internal.io;

import io.fabricckpt.core.DistributedException;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeProcessGroup;
import java.nio.charset.StandardCharsets;

/**
 * A step of a collective save that global rank 0 does alone (or decides): every rank learns its
 * outcome by one broadcast and fails with it, so that no rank goes on (or waits) when rank 0 could
 * not.
 */
final class RankZeroOutcome {
    private static final byte OK = 1;
    private static final byte FAILED = 0;

    private RankZeroOutcome() {}

    /**
     * Shares rank 0's outcome ({@code rankZeroFailure}, set on rank 0 only; {@code group} null for one
     * process). Every rank fails if it failed: with its own error of the step ({@code own}) when it had
     * one, rank 0 with its exception, the others with a {@link DistributedException} naming {@code where}
     * and saying that rank 0 {@code what}.
     */
    static void share(NativeProcessGroup group, String where, RuntimeException rankZeroFailure, RuntimeException own,
            String step, String what) {
        byte[] outcome = rankZeroFailure == null ? new byte[] {OK} : failed(rankZeroFailure);
        if (group != null && group.worldSize() > 1) {
            outcome = NativeCalls.bytes(group.broadcastBytes(outcome, outcome.length, 0));
        }
        if (outcome.length > 0 && outcome[0] == OK && own == null) {
            return;
        }
        if (own != null) {
            throw own;
        }
        if (rankZeroFailure != null) {
            throw rankZeroFailure;
        }
        int rank = group == null ? 0 : group.rank();
        String detail = new String(outcome, 1, Math.max(0, outcome.length - 1), StandardCharsets.UTF_8);
        throw new DistributedException(where + ": global rank 0 " + what + " (on rank " + rank + "): " + detail, rank,
                step, null);
    }

    private static byte[] failed(RuntimeException e) {
        byte[] text = (e.getMessage() == null ? e.toString() : e.getMessage()).getBytes(StandardCharsets.UTF_8);
        byte[] out = new byte[text.length + 1];
        out[0] = FAILED;
        System.arraycopy(text, 0, out, 1, text.length);
        return out;
    }
}
