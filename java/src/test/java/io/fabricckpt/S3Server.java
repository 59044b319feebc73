package io.fabricckpt;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.core.checksums.RequestChecksumCalculation;
import software.amazon.awssdk.core.checksums.ResponseChecksumValidation;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.s3.S3Client;

/**
 * A real S3 server for the tests: S3Proxy (the jar Maven copies to build/s3proxy/s3proxy.jar, named by
 * FABRICCKPT_S3PROXY_JAR) with its filesystem backend in a temporary folder, listening on a free loopback
 * port over http and on another over https (a self-signed certificate for 127.0.0.1 made with the JDK's
 * keytool, its PEM file {@link #caBundle()}), as its own process. One per test JVM, started on first use and stopped when the JVM exits; this
 * JVM's S3 settings (system properties the library and the SDK read) point at it, and
 * {@link #environment()} gives the same to child processes. Each test takes buckets of its own.
 */
public final class S3Server {
    public static final String ACCESS_KEY = "fabricckpt-test";
    public static final String SECRET_KEY = "fabricckpt-test-secret";
    public static final String REGION = "us-east-1";

    private static S3Server instance;
    private static final AtomicInteger BUCKETS = new AtomicInteger();

    private static final String KEYSTORE_PASSWORD = "fabricckpt-test";

    private final Process process;
    private final Path dir;
    private final URI endpoint;
    private final URI secureEndpoint;
    private final S3Client client;

    private S3Server(Process process, Path dir, URI endpoint, URI secureEndpoint) {
        this.process = process;
        this.dir = dir;
        this.endpoint = endpoint;
        this.secureEndpoint = secureEndpoint;
        this.client = S3Client.builder().endpointOverride(endpoint).forcePathStyle(true).region(Region.of(REGION))
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create(ACCESS_KEY, SECRET_KEY)))
                .requestChecksumCalculation(RequestChecksumCalculation.WHEN_REQUIRED)
                .responseChecksumValidation(ResponseChecksumValidation.WHEN_REQUIRED).build();
    }

    /** The server, started on first use; this JVM's S3 settings point at it from then on. */
    public static synchronized S3Server get() {
        if (instance == null) {
            instance = start();
            environment().forEach((name, value) -> {
                String property = PROPERTIES.get(name);
                if (property != null) {
                    System.setProperty(property, value);
                }
            });
            S3Server started = instance;
            Runtime.getRuntime().addShutdownHook(new Thread(started::stop));
        }
        return instance;
    }

    /** The system properties the SDK (and S3Settings) read in place of each environment variable. */
    private static final Map<String, String> PROPERTIES = Map.of(
            "AWS_ACCESS_KEY_ID", "aws.accessKeyId",
            "AWS_SECRET_ACCESS_KEY", "aws.secretAccessKey",
            "AWS_REGION", "aws.region",
            "AWS_ENDPOINT_URL", "aws.endpointUrl",
            "AWS_REQUEST_CHECKSUM_CALCULATION", "aws.requestChecksumCalculation",
            "AWS_RESPONSE_CHECKSUM_VALIDATION", "aws.responseChecksumValidation",
            "FABRICCKPT_S3_PART_SIZE", "fabricckpt.s3.partSize",
            "FABRICCKPT_S3_CONCURRENCY", "fabricckpt.s3.concurrency");

    /**
     * The environment a process needs to use this server: credentials, region, endpoint, the checksum
     * mode S3Proxy accepts, and small parts (5 MiB, 3 at once) so that tests of a few tens of MiB take
     * the multipart path with several parts in flight.
     */
    public static Map<String, String> environment() {
        Map<String, String> env = new HashMap<>();
        env.put("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        env.put("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        env.put("AWS_REGION", REGION);
        env.put("AWS_ENDPOINT_URL", get().endpoint.toString());
        env.put("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required");
        env.put("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required");
        env.put("FABRICCKPT_S3_PART_SIZE", "5M");
        env.put("FABRICCKPT_S3_CONCURRENCY", "3");
        return env;
    }

    public URI endpoint() {
        return endpoint;
    }

    /** The same server over https; its certificate is trusted only through {@link #caBundle()}. */
    public URI secureEndpoint() {
        return secureEndpoint;
    }

    /** The PEM file of the https endpoint's self-signed certificate (what AWS_CA_BUNDLE names). */
    public Path caBundle() {
        return dir.resolve("ca.pem");
    }

    /** A client of the server's own, to look at what the library wrote. */
    public S3Client client() {
        return client;
    }

    /** A new empty bucket, named after {@code purpose}. */
    public String newBucket(String purpose) {
        String name = (purpose.toLowerCase(java.util.Locale.ROOT).replaceAll("[^a-z0-9]", "-") + "-"
                + BUCKETS.incrementAndGet());
        client.createBucket(b -> b.bucket(name));
        return name;
    }

    private static S3Server start() {
        String jar = System.getenv("FABRICCKPT_S3PROXY_JAR");
        if (jar == null || !Files.isRegularFile(Path.of(jar))) {
            throw new IllegalStateException("S3Proxy's jar not found (FABRICCKPT_S3PROXY_JAR=" + jar
                    + "): the Maven build copies it to build/s3proxy/s3proxy.jar");
        }
        IOException last = null;
        for (int attempt = 0; attempt < 3; attempt++) { // a port taken between choosing and binding: another
            try {
                Path dir = Files.createTempDirectory("fabricckpt-s3proxy-");
                Files.createDirectories(dir.resolve("data"));
                Path keystore = makeCertificate(dir);
                int port = freePort();
                int securePort = freePort();
                URI endpoint = URI.create("http://127.0.0.1:" + port);
                URI secureEndpoint = URI.create("https://127.0.0.1:" + securePort);
                Path properties = dir.resolve("s3proxy.properties");
                Files.writeString(properties, String.join("\n",
                        "s3proxy.endpoint=" + endpoint,
                        "s3proxy.secure-endpoint=" + secureEndpoint,
                        "s3proxy.keystore-path=" + keystore,
                        "s3proxy.keystore-password=" + KEYSTORE_PASSWORD,
                        "s3proxy.authorization=aws-v2-or-v4",
                        "s3proxy.identity=" + ACCESS_KEY,
                        "s3proxy.credential=" + SECRET_KEY,
                        "jclouds.provider=filesystem",
                        "jclouds.filesystem.basedir=" + dir.resolve("data"), ""));
                String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
                Process process = new ProcessBuilder(java, "-Xmx512m", "-jar", jar, "--properties", properties.toString())
                        .redirectErrorStream(true).redirectOutput(dir.resolve("s3proxy.log").toFile()).start();
                if (awaitListening(process, port) && awaitListening(process, securePort)) {
                    return new S3Server(process, dir, endpoint, secureEndpoint);
                }
                process.destroyForcibly();
                last = new IOException("S3Proxy did not start on ports " + port + " and " + securePort + ":\n"
                        + Files.readString(dir.resolve("s3proxy.log")));
            } catch (IOException e) {
                last = e;
            }
        }
        throw new UncheckedIOException(last);
    }

    /**
     * A PKCS#12 keystore in {@code dir} holding a new self-signed certificate for 127.0.0.1 (valid for a
     * few days: the server lives as long as one test JVM), and the certificate as {@code dir/ca.pem}.
     */
    private static Path makeCertificate(Path dir) throws IOException {
        Path keystore = dir.resolve("keystore.p12");
        String keytool = Path.of(System.getProperty("java.home"), "bin", "keytool").toString();
        run(dir, keytool, "-genkeypair", "-alias", "s3proxy", "-keyalg", "EC", "-groupname", "secp256r1",
                "-dname", "CN=127.0.0.1", "-ext", "SAN=ip:127.0.0.1", "-validity", "3", "-storetype", "PKCS12",
                "-keystore", keystore.toString(), "-storepass", KEYSTORE_PASSWORD);
        run(dir, keytool, "-exportcert", "-rfc", "-alias", "s3proxy", "-keystore", keystore.toString(),
                "-storepass", KEYSTORE_PASSWORD, "-file", dir.resolve("ca.pem").toString());
        return keystore;
    }

    private static void run(Path dir, String... command) throws IOException {
        Path log = dir.resolve("keytool.log");
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try {
            if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
                p.destroyForcibly();
                throw new IOException(String.join(" ", command) + " failed:\n" + Files.readString(log));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
    }

    private static boolean awaitListening(Process process, int port) throws IOException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && process.isAlive()) {
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return true;
            } catch (IOException notYet) {
                try {
                    Thread.sleep(100);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted", e);
                }
            }
        }
        return false;
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return socket.getLocalPort();
        }
    }

    private void stop() {
        client.close();
        process.destroy();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
        }
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // a temporary folder left behind is harmless
        }
    }
}
