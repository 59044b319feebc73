package io.fabricckpt.cli.format;

import io.fabricckpt.internal.CallbackFailure;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * The Java ends of native converts' outputs ({@link Outlines#convertInto}): each open output has an id
 * that native code passes back with every piece of bytes, and one callback delivers them all (JavaCPP
 * binds a callback class to one live instance).
 */
final class ConvertOutputs {
    private static final Map<Long, Outlines.ByteSink> SINKS = new ConcurrentHashMap<>();
    private static final AtomicLong NEXT = new AtomicLong();
    private static volatile Writer writer;

    private ConvertOutputs() {}

    /** The id under which native code writes to {@code sink} until {@link #close}. */
    static long open(Outlines.ByteSink sink) {
        long id = NEXT.incrementAndGet();
        SINKS.put(id, sink);
        return id;
    }

    static void close(long id) {
        SINKS.remove(id);
    }

    static FormatNative.OutputWriter writer() {
        if (writer == null) {
            synchronized (ConvertOutputs.class) {
                if (writer == null) {
                    writer = new Writer();
                }
            }
        }
        return writer;
    }

    private static final class Writer extends FormatNative.OutputWriter {
        @Override
        public int call(long stream, Pointer data, long size) {
            try {
                Outlines.ByteSink sink = SINKS.get(stream);
                if (sink == null) {
                    throw new IllegalStateException("no convert output " + stream + " is open");
                }
                if (size > 0) {
                    sink.write(new BytePointer(data).position(0).capacity(size).limit(size).asByteBuffer());
                }
                return 0;
            } catch (RuntimeException | Error e) { // never into native code
                return CallbackFailure.record(e);
            }
        }
    }
}
