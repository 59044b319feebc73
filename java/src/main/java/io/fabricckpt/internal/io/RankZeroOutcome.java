package io.fabricckpt.internal.io;

import io.fabricckpt.core.DistributedException;
import io.fabricckpt.internal.NativeCalls;
import io.fabricckpt.internal.NativeProcessGroup;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * How the ranks of a collective save tell each other how a step went: a message that is a status
 * byte, then the step's result (success) or the failure's text. {@link #share} sends global rank 0's
 * outcome of a step it does alone (or decides) to every rank, so that no rank goes on (or waits) when
 * rank 0 could not.
 */
final class RankZeroOutcome {
    private static final byte OK = 1;
    private static final byte FAILED = 0;

    private RankZeroOutcome() {}

    /** A success carrying {@code body}. */
    static byte[] ok(byte[] body) {
        return withStatus(OK, body);
    }

    /** A failure carrying {@code e}'s message. */
    static byte[] failed(RuntimeException e) {
        return withStatus(FAILED, (e.getMessage() == null ? e.toString() : e.getMessage())
                .getBytes(StandardCharsets.UTF_8));
    }

    static boolean isOk(byte[] message) {
        return message.length > 0 && message[0] == OK;
    }

    /** A success's body, or a failure's text as bytes. */
    static byte[] body(byte[] message) {
        return Arrays.copyOfRange(message, Math.min(1, message.length), message.length);
    }

    /**
     * Shares rank 0's outcome ({@code rankZeroFailure}, set on rank 0 only; {@code group} null for one
     * process). Every rank fails if it failed: with its own error of the step ({@code own}) when it had
     * one, rank 0 with its exception, the others with a {@link DistributedException} naming {@code where}
     * and saying that rank 0 {@code what}.
     */
    static void share(NativeProcessGroup group, String where, RuntimeException rankZeroFailure, RuntimeException own,
            String step, String what) {
        byte[] outcome = rankZeroFailure == null ? ok(new byte[0]) : failed(rankZeroFailure);
        if (group != null && group.worldSize() > 1) {
            outcome = NativeCalls.bytes(group.broadcastBytes(outcome, outcome.length, 0));
        }
        if (isOk(outcome) && own == null) {
            return;
        }
        if (own != null) {
            throw own;
        }
        if (rankZeroFailure != null) {
            throw rankZeroFailure;
        }
        int rank = group == null ? 0 : group.rank();
        String detail = new String(body(outcome), StandardCharsets.UTF_8);
        throw new DistributedException(where + ": global rank 0 " + what + " (on rank " + rank + "): " + detail, rank,
                step, null);
    }

    private static byte[] withStatus(byte status, byte[] body) {
        byte[] out = new byte[body.length + 1];
        out[0] = status;
        System.arraycopy(body, 0, out, 1, body.length);
        return out;
    }
}
