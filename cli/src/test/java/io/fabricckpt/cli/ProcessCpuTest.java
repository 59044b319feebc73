package io.fabricckpt.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** The CPU accounting bench-s3 shows for itself and for a local S3 server (Linux /proc). */
class ProcessCpuTest {
    @Test
    void findsTheProcessListeningOnALoopbackPort() throws IOException {
        try (ServerSocket listening = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            var found = ProcessCpu.listeningOn(listening.getLocalPort());
            assertTrue(found.isPresent(), "no process found listening on port " + listening.getLocalPort());
            assertEquals(ProcessHandle.current().pid(), found.get().pid());
        }
        // The same port once nothing listens there: nobody.
        int port;
        try (ServerSocket closed = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = closed.getLocalPort();
        }
        assertTrue(ProcessCpu.listeningOn(port).isEmpty());
    }

    @Test
    void countsTheCpuSecondsOfThisJvmAndOfAnotherProcess() throws Exception {
        ProcessCpu self = ProcessCpu.self();
        double before = self.seconds();
        burn(0.3);
        assertTrue(self.seconds() - before >= 0.25, "0.3 s of hashing counted as " + (self.seconds() - before));

        // Another process, read from /proc: a shell busy for a while, then gone.
        Process busy = new ProcessBuilder("sh", "-c", "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done").start();
        ProcessCpu other = ProcessCpu.of(busy.pid());
        double last = 0;
        while (busy.isAlive()) {
            double now = other.seconds();
            if (!Double.isNaN(now)) {
                last = now;
            }
            TimeUnit.MILLISECONDS.sleep(20);
        }
        assertEquals(0, busy.waitFor());
        assertTrue(last > 0.05, "the shell's loop counted as " + last + " CPU s");
        assertTrue(Double.isNaN(other.seconds()), "a process that is gone has no CPU seconds");
    }

    private static void burn(double seconds) throws NoSuchAlgorithmException {
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        byte[] block = new byte[1 << 20];
        long end = System.nanoTime() + (long) (seconds * 1e9);
        while (System.nanoTime() < end) {
            sha.update(block);
        }
    }
}
