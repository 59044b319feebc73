package io.fabricckpt.internal;

import io.fabricckpt.core.CheckpointLocation;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;

/** Strings across the JNI boundary: paths and texts as the UTF-8 std::strings the native side expects. */
public final class NativeCalls {
    private NativeCalls() {}

    /** A path as the UTF-8 std::string the native side expects. */
    public static BytePointer path(Path path) {
        return utf8(path.toAbsolutePath().toString());
    }

    public static BytePointer path(CheckpointLocation location) {
        return path(location.path());
    }

    /**
     * {@code text} for a native {@code std::string} parameter. NUL-terminated: JavaCPP takes the length
     * of a pointer with no bytes from strlen, so an empty string must still end in a NUL.
     */
    public static BytePointer utf8(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        BytePointer p = new BytePointer(bytes.length + 1L);
        p.put(bytes).put(bytes.length, (byte) 0);
        return p.limit(bytes.length);
    }

    /** A returned std::string's bytes, releasing its native copy. */
    public static byte[] bytes(BytePointer p) {
        if (p == null) { // JavaCPP maps an empty std::string to null
            return new byte[0];
        }
        try (p) {
            byte[] out = new byte[Math.toIntExact(p.limit())];
            p.get(out);
            return out;
        }
    }

    /** A returned std::string as Java text, releasing its native copy. */
    public static String string(BytePointer p) {
        return new String(bytes(p), StandardCharsets.UTF_8);
    }
}
