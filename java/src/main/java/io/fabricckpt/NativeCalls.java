package io.fabricckpt;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;

/** Small helpers shared by the classes that call into the native library. */
final class NativeCalls {
    private NativeCalls() {}

    /** A path as the UTF-8 std::string the native side expects. */
    static BytePointer path(Path path) {
        return new BytePointer(path.toAbsolutePath().toString().getBytes(StandardCharsets.UTF_8));
    }

    static String string(BytePointer p) {
        if (p == null) { // JavaCPP maps an empty std::string to null
            return "";
        }
        try (p) {
            byte[] out = new byte[Math.toIntExact(p.limit())];
            p.get(out);
            return new String(out, StandardCharsets.UTF_8);
        }
    }

    /** JavaCPP rethrows C++ exceptions as RuntimeException carrying what(); give them our type. */
    static CheckpointException translate(RuntimeException e) {
        if (e instanceof CheckpointException ce) {
            return ce;
        }
        return new CheckpointException(e.getMessage(), e);
    }
}
