package io.fabricckpt.internal.io.s3;

import java.net.URI;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * How this process talks to S3, read from the environment as AWS tools read it (credentials come from
 * the SDK's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles):
 * <ul>
 *   <li>{@code AWS_REGION} (else {@code AWS_DEFAULT_REGION}, else us-east-1);
 *   <li>{@code AWS_ENDPOINT_URL_S3} or {@code AWS_ENDPOINT_URL}: an S3-compatible store;
 *   <li>{@code AWS_S3_FORCE_PATH_STYLE=true}: bucket in the path, not the host name (always when the
 *       endpoint's host is an IP address, which cannot carry a bucket name);
 *   <li>{@code AWS_CA_BUNDLE}: a PEM file of the certificates an https endpoint is trusted by, in place of
 *       the JVM's trust store, as the AWS CLI and botocore (s3fs) read it: one environment serves both
 *       sides of a store with a private CA;
 *   <li>{@code FABRICCKPT_S3_PART_SIZE} (bytes, suffixes K/M/G; default 16M, at least 5M as S3 requires):
 *       the size of each multipart-upload part, and the least size of each ranged GET
 *       ({@link #rangeSizeFor});
 *   <li>{@code FABRICCKPT_S3_CONCURRENCY} (default 4): parts uploaded or ranges fetched at once; a save
 *       holds at most this many parts in memory.
 * </ul>
 * Java system properties override them as the SDK's do: {@code aws.region}, {@code aws.endpointUrl},
 * {@code fabricckpt.s3.forcePathStyle}, {@code fabricckpt.s3.caBundle}, {@code fabricckpt.s3.partSize},
 * {@code fabricckpt.s3.concurrency}. {@code endpoint} and {@code caBundle} are null when not set.
 */
public record S3Settings(String region, URI endpoint, boolean pathStyle, Path caBundle, long partSize,
        int concurrency) {
    /** S3's smallest part but the last. */
    public static final long MIN_PART_SIZE = 5L << 20;
    /** S3's most parts in one upload. */
    public static final int MAX_PARTS = 10_000;
    /** About how many ranged GETs each download worker fetches ({@link #rangeSizeFor}). */
    private static final long RANGES_PER_WORKER = 4;
    /** The largest a ranged GET grows beyond the part size. */
    private static final long MAX_GROWN_RANGE = 64L << 20;

    private static final Pattern IP_HOST = Pattern.compile("\\d{1,3}(\\.\\d{1,3}){3}|\\[?[0-9a-fA-F:]+\\]?");

    public S3Settings {
        if (partSize < MIN_PART_SIZE) {
            throw new IllegalArgumentException("S3 part size " + partSize + " is below S3's minimum of 5 MiB");
        }
        if (concurrency < 1) {
            throw new IllegalArgumentException("S3 concurrency must be at least 1, not " + concurrency);
        }
    }

    /** The settings of this process: its environment and system properties. */
    public static S3Settings fromEnvironment() {
        Map<String, String> env = new java.util.HashMap<>(System.getenv());
        putProperty(env, "AWS_REGION", "aws.region");
        putProperty(env, "AWS_ENDPOINT_URL_S3", "aws.endpointUrl");
        putProperty(env, "AWS_S3_FORCE_PATH_STYLE", "fabricckpt.s3.forcePathStyle");
        putProperty(env, "AWS_CA_BUNDLE", "fabricckpt.s3.caBundle");
        putProperty(env, "FABRICCKPT_S3_PART_SIZE", "fabricckpt.s3.partSize");
        putProperty(env, "FABRICCKPT_S3_CONCURRENCY", "fabricckpt.s3.concurrency");
        return from(env);
    }

    private static void putProperty(Map<String, String> env, String variable, String property) {
        String value = System.getProperty(property);
        if (value != null && !value.isBlank()) {
            env.put(variable, value);
        }
    }

    /** The settings that {@code env} (variable names as in the class comment) gives. */
    public static S3Settings from(Map<String, String> env) {
        String region = first(env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION"), "us-east-1");
        String endpointText = first(env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL"), null);
        URI endpoint = endpointText == null ? null : URI.create(endpointText);
        boolean pathStyle = "true".equalsIgnoreCase(env.getOrDefault("AWS_S3_FORCE_PATH_STYLE", ""))
                || endpoint != null && endpoint.getHost() != null && IP_HOST.matcher(endpoint.getHost()).matches()
                || endpoint != null && "localhost".equals(endpoint.getHost());
        String caBundle = first(env.get("AWS_CA_BUNDLE"), null, null);
        long partSize = parseSize(first(env.get("FABRICCKPT_S3_PART_SIZE"), null, "16M"));
        int concurrency = Integer.parseInt(first(env.get("FABRICCKPT_S3_CONCURRENCY"), null, "4").trim());
        return new S3Settings(region, endpoint, pathStyle, caBundle == null ? null : Path.of(caBundle), partSize,
                concurrency);
    }

    /** The part size for an object of {@code size} bytes: the configured one, grown to stay within S3's 10,000 parts. */
    public long partSizeFor(long size) {
        long least = (size + MAX_PARTS - 1) / MAX_PARTS;
        return Math.max(partSize, least);
    }

    /**
     * The ranged GET size for a read of {@code size} bytes: the part size, grown until each of the
     * {@link #concurrency} workers fetches about {@value #RANGES_PER_WORKER} ranges, at most
     * {@value #MAX_GROWN_RANGE} bytes. Fewer, longer requests: against both S3Proxy and versitygw on
     * loopback, 4 workers fetched 1 GiB in 64 MiB ranges in ~700 ms and in 16 MiB ranges in ~900 ms;
     * four ranges a worker keep every worker busy until the end.
     */
    public long rangeSizeFor(long size) {
        long ranges = RANGES_PER_WORKER * concurrency;
        long even = (size + ranges - 1) / ranges;
        return Math.max(partSize, Math.min(even, MAX_GROWN_RANGE));
    }

    static long parseSize(String text) {
        String t = text.trim().toUpperCase(java.util.Locale.ROOT);
        long unit = 1;
        if (t.endsWith("IB")) {
            t = t.substring(0, t.length() - 2);
        } else if (t.endsWith("B")) {
            t = t.substring(0, t.length() - 1);
        }
        switch (t.isEmpty() ? ' ' : t.charAt(t.length() - 1)) {
            case 'K' -> unit = 1L << 10;
            case 'M' -> unit = 1L << 20;
            case 'G' -> unit = 1L << 30;
            default -> unit = 1;
        }
        if (unit != 1) {
            t = t.substring(0, t.length() - 1);
        }
        try {
            return Math.multiplyExact(Long.parseLong(t.trim()), unit);
        } catch (NumberFormatException | ArithmeticException e) {
            throw new IllegalArgumentException("not a size in bytes: '" + text + "' (e.g. 16M)", e);
        }
    }

    private static String first(String a, String b, String fallback) {
        if (a != null && !a.isBlank()) {
            return a;
        }
        return b != null && !b.isBlank() ? b : fallback;
    }
}
