package io.fabricckpt.cli.format;

import java.util.concurrent.atomic.AtomicReference;

/**
 * What made a Java callback of native code fail. A callback must not throw into native code, so it
 * returns nonzero, native code throws its own error, and the {@link Outlines} call that ran it rethrows
 * this one instead, as itself (a storage error stays a storage error).
 */
final class CallbackFailure {
    private static final AtomicReference<RuntimeException> FIRST = new AtomicReference<>();

    private CallbackFailure() {}

    /** Keeps {@code e} unless an earlier failure is kept; the nonzero status the callback returns. */
    static int record(Throwable e) {
        FIRST.compareAndSet(null, e instanceof RuntimeException r ? r : new RuntimeException(e));
        return 1;
    }

    static void clear() {
        FIRST.set(null);
    }

    /** The first failure since {@link #clear}, cleared; null when none. */
    static RuntimeException take() {
        return FIRST.getAndSet(null);
    }
}
