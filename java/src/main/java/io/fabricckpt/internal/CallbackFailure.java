package io.fabricckpt.internal;

import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.Supplier;

/**
 * What made a Java callback of native code fail. A callback must not throw into native code, so it
 * returns nonzero, native code throws its own error, and the native call that ran it ({@link #run})
 * rethrows this one instead, as itself (a storage error stays a storage error). Shared by both JNI
 * libraries' callbacks (the library's and the command line's torch-free one).
 */
public final class CallbackFailure {
    private static final AtomicReference<RuntimeException> FIRST = new AtomicReference<>();

    private CallbackFailure() {}

    /** Keeps {@code e} unless an earlier failure is kept; the nonzero status the callback returns. */
    public static int record(Throwable e) {
        FIRST.compareAndSet(null, e instanceof RuntimeException r ? r : new RuntimeException(e));
        return 1;
    }

    /**
     * What the native {@code call} gives. When it throws: the failure a callback it ran recorded, as
     * itself, else its own error through {@code translate}.
     */
    public static <T> T run(Supplier<T> call, Function<RuntimeException, ? extends RuntimeException> translate) {
        FIRST.set(null);
        try {
            return call.get();
        } catch (RuntimeException e) {
            RuntimeException callback = FIRST.getAndSet(null);
            throw callback != null ? callback : translate.apply(e);
        }
    }
}
