package io.fabricckpt;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** This JVM's resident memory, from /proc/self/status, for the tests that bound what an operation adds. */
final class ProcessMemory {
    private ProcessMemory() {}

    /** A /proc/self/status field (VmRSS, VmHWM) in bytes. */
    static long status(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.substring(field.length() + 1).trim().split("\\s+")[0]) * 1024;
            }
        }
        throw new IllegalStateException("no " + field + " in /proc/self/status");
    }

    /** Sets the peak (VmHWM) to the resident memory now, and returns that (VmRSS). */
    static long resetPeak() throws IOException {
        System.gc();
        long now = status("VmRSS");
        Files.writeString(Path.of("/proc/self/clear_refs"), "5"); // VmHWM := VmRSS
        return now;
    }
}
