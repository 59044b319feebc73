package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointLocation;
import io.fabricckpt.core.CheckpointNotFoundException;
import io.fabricckpt.core.CheckpointStorageException;
import io.fabricckpt.core.CorruptCheckpointException;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A checkpoint in object storage staged in the temporary folder for the native readers, which read
 * local files (the command line's torch-free commands; the library's verify and unsafe globals).
 * {@link #forOutline}: an object as a sparse file of its size into which only the byte ranges the
 * outline reads are fetched (of a torch.save file its end record and directory, every local header,
 * data.pkl and the other small records, never a storage; of a safetensors file its header; a legacy
 * file whole), as {@link StagingNatives#rangesMissing} says, round by round (the directory tells where
 * the rest lies), so that {@code inspect} of a 10 GB object fetches kilobytes; a Hugging Face index
 * object as a directory of the index and its shards, each shard's header fetched.
 * {@link #forShardedOutline}: a sharded prefix the same way, file by file. {@link #forReading}: either,
 * for what reads every byte (verify, diff, convert): the holes, the bytes not fetched, are read from
 * the store into memory as the readers ask for them ({@link StagingNatives#register},
 * {@link ObjectReadahead}), so the disk holds only the structure. Removed on close. Its native calls go
 * through the {@link StagingNatives} binding of the caller's JNI library.
 */
public final class StagedObject implements AutoCloseable {
    /** The first and last bytes fetched up front: the start (data.pkl and the small records torch writes first) and the directory. */
    private static final long EDGE = 256 << 10;
    /** Ranges closer than this are fetched as one GET. */
    private static final long GAP = 64 << 10;
    private static final int MAX_ROUNDS = 8;
    /** Of the item streams a sharded load reads: those of at most this are staged whole, of the others their ends. */
    private static final long SMALL_ITEM = 1 << 20;
    private static final long ITEM_HEAD = 4 << 10;
    private static final long ITEM_TAIL = 68 << 10;

    private final StagingNatives natives;
    private final CheckpointLocation object;
    private final Path file;     // what close() removes: the staged file or directory
    private final Path read;     // what the commands read: `file`, or the index inside it
    private final String shown;  // what messages name instead of `file`
    private long size;
    private long fetchedBytes;
    /** Each staged file's object and size, and the ranges of it that hold the object's bytes (the rest are holes). */
    private final Map<Path, CheckpointLocation> objectOfFile = new HashMap<>();
    private final Map<Path, Long> sizeOfFile = new HashMap<>();
    private final Map<Path, List<long[]>> bytesInFile = new HashMap<>();
    /** Set once the holes are read from the store ({@link #readingHolesFromStore}). */
    private ObjectReadahead holes;
    /** Of a sharded load ({@link #forShardedLoad}): each file's ranges it may read (merged), where read-ahead stops. */
    private Map<Path, List<long[]>> readable; // concurrent: the hole reads look it up

    private StagedObject(StagingNatives natives, CheckpointLocation object, Path file, long size) {
        this(natives, object, file, file, object.toString(), size);
    }

    private StagedObject(StagingNatives natives, CheckpointLocation object, Path file, Path read, String shown,
            long size) {
        this.natives = natives;
        this.object = object;
        this.file = file;
        this.read = read;
        this.shown = shown;
        this.size = size;
    }

    /**
     * The object staged for its outline, or null when there is no such object (a sharded prefix, or
     * nothing: the library says which).
     */
    public static StagedObject forOutline(String url, StagingNatives natives) {
        CheckpointLocation object = CheckpointLocation.parse(url);
        S3Objects objects = S3Objects.shared();
        if (isIndex(object)) {
            return index(object, natives);
        }
        long size;
        try {
            size = objects.size(object);
        } catch (CheckpointNotFoundException e) {
            return null;
        }
        Path file;
        try {
            file = Files.createTempFile("fabricckpt-inspect-", ".pt");
        } catch (IOException e) {
            throw new CheckpointStorageException(url + ": cannot stage it in the temporary folder: " + e.getMessage(), e);
        }
        return filled(new StagedObject(natives, object, file, size), url, staged -> {
            staged.createSparse(object, file, size);
            staged.fetch(objects, List.of(new long[] {0, Math.min(size, EDGE)},
                    new long[] {Math.max(0, size - EDGE), Math.min(size, EDGE)}));
            for (int round = 0; ; round++) {
                List<long[]> missing = natives.rangesMissing(file, staged.held(file));
                if (missing.isEmpty()) {
                    return;
                }
                if (round == MAX_ROUNDS) {
                    throw new CheckpointStorageException(url + ": its zip directory still names unread ranges after "
                            + MAX_ROUNDS + " rounds of fetches", null);
                }
                staged.fetch(objects, missing);
            }
        });
    }

    /**
     * The object or sharded prefix at {@code url} staged for reading every byte: as {@link #forOutline},
     * else as {@link #forShardedOutline} with every tensor chunk's structure fetched too, and its holes
     * read from the store from then on. CheckpointNotFoundException naming the URL when it is neither.
     */
    public static StagedObject forReading(String url, StagingNatives natives) {
        StagedObject object = forOutline(url, natives);
        if (object == null) {
            object = forShardedOutline(url, natives, true);
        }
        if (object == null) {
            S3Objects.shared().size(CheckpointLocation.parse(url)); // the error that names what is missing
            throw new CheckpointNotFoundException(url + ": no such object or sharded checkpoint", null);
        }
        return object.readingHolesFromStore();
    }

    /** This staging, whose holes the native readers read from their objects from now on until close (closed on a failure). */
    private StagedObject readingHolesFromStore() {
        try {
            holes = new ObjectReadahead(S3Objects.shared());
            objectOfFile.keySet().forEach(path -> natives.register(path, held(path), holeSource(path)));
            return this;
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /**
     * Where the holes of the staged file {@code path} are read from: its object, through the read-ahead,
     * whose windows stop at the object's end, or for a sharded load at the end of the readable range
     * the read lies in (a read outside them fetches exactly itself).
     */
    private StagingNatives.HoleSource holeSource(Path path) {
        CheckpointLocation from = objectOfFile.get(path);
        long bytes = sizeOfFile.get(path);
        return (offset, dest) -> {
            long end = bytes;
            if (readable != null) {
                end = offset + dest.remaining();
                for (long[] r : readable.getOrDefault(path, List.of())) {
                    if (r[0] <= offset && offset + dest.remaining() <= r[0] + r[1]) {
                        end = r[0] + r[1];
                        break;
                    }
                }
            }
            holes.read(from, end, offset, dest);
        };
    }

    /** {@code ranges} ({offset, length}) sorted, touching and overlapping ones joined. */
    private static List<long[]> merged(List<long[]> ranges) {
        List<long[]> sorted = new ArrayList<>(ranges);
        sorted.sort(java.util.Comparator.comparingLong(r -> r[0]));
        List<long[]> out = new ArrayList<>();
        for (long[] r : sorted) {
            long[] last = out.isEmpty() ? null : out.get(out.size() - 1);
            if (last != null && r[0] <= last[0] + last[1]) {
                last[1] = Math.max(last[1], r[0] + r[1] - last[0]);
            } else {
                out.add(new long[] {r[0], r[1]});
            }
        }
        return out;
    }

    /**
     * The sharded prefix at {@code url} staged for its outline, or null when it holds no {@code .metadata}:
     * a directory of its objects, {@code .metadata} and meta.pt fetched whole, each shard file a sparse
     * file of its size into which only the ranges the outline reads are fetched ({@link
     * StagingNatives#shardedRangesMissing}: each value's and each whole tensor's torch.save directory and small
     * records, never a chunk's data), round by round.
     */
    public static StagedObject forShardedOutline(String url, StagingNatives natives) {
        return forShardedOutline(url, natives, false);
    }

    /** {@link #forShardedOutline}; {@code everyItem}: every tensor chunk's structure fetched too (for verify). */
    private static StagedObject forShardedOutline(String url, StagingNatives natives, boolean everyItem) {
        CheckpointLocation location = CheckpointLocation.parse(url);
        S3Objects objects = S3Objects.shared();
        return shardedDirectory(location, natives, (staged, dir, sizes) -> {
            for (int round = 0; ; round++) {
                Map<String, List<long[]>> heldByName = new TreeMap<>();
                sizes.keySet().forEach(name -> heldByName.put(name, staged.held(dir.resolve(name))));
                Map<String, List<long[]>> missing = natives.shardedRangesMissing(dir, heldByName, everyItem);
                if (missing.isEmpty()) {
                    return;
                }
                if (round == MAX_ROUNDS) {
                    throw new CheckpointStorageException(url + ": its items still name unread ranges after "
                            + MAX_ROUNDS + " rounds of fetches", null);
                }
                for (var entry : missing.entrySet()) {
                    staged.fetch(objects, staged.shardFile(entry.getKey()), entry.getValue(), GAP);
                }
            }
        });
    }

    /**
     * The sharded prefix {@code location} staged for a load that reads it key by key (a sharded
     * {@code s3://} load on any world size), or null when it holds no {@code .metadata}: {@code .metadata}
     * and meta.pt fetched whole, each shard file a sparse file of its size of which nothing is fetched
     * until {@link #fetchToRead} names the item streams a read needs. Every hole is read from the store
     * into the reader's memory, so the disk holds only the structure of what was read.
     */
    public static StagedObject forShardedLoad(CheckpointLocation location, StagingNatives natives) {
        StagedObject staged = shardedDirectory(location, natives, (object, dir, sizes) -> { });
        if (staged == null) {
            return null;
        }
        staged.readable = new ConcurrentHashMap<>();
        return staged.readingHolesFromStore();
    }

    /**
     * Makes ready the reading of the item streams {@code itemsByFile} ({offset, length} by shard file
     * name) of a {@link #forShardedLoad} staging. A stream of at most {@value #SMALL_ITEM} bytes (a small
     * tensor, a pickled value) is fetched into the staged file whole; of a larger one only its structure
     * is, its first {@value #ITEM_HEAD} bytes (the torch.save zip's first headers and pickle, or the
     * safetensors header) and last {@value #ITEM_TAIL} (the records after the tensor's bytes and the zip
     * directory, which a zip reader looks for in the last 64 KiB). DCP writes a file's items back to
     * back, so these ranges mostly touch and are fetched together, every file's at once. A large
     * stream's tensor bytes stay in the store and are read from there into the reader's memory as it
     * reads them, through read-ahead windows that stop at the end of the streams this load reads, so
     * no byte of another rank's chunks beside them is fetched.
     */
    public void fetchToRead(Map<String, List<long[]>> itemsByFile) {
        S3Objects objects = S3Objects.shared();
        for (var entry : itemsByFile.entrySet()) {
            ShardFile shard = shardFile(entry.getKey());
            readable.merge(shard.path, merged(entry.getValue()), (had, more) -> {
                List<long[]> all = new ArrayList<>(had);
                all.addAll(more);
                return merged(all);
            });
            List<long[]> structure = new ArrayList<>();
            for (long[] item : entry.getValue()) {
                if (item[1] <= SMALL_ITEM) {
                    structure.add(item);
                } else {
                    structure.add(new long[] {item[0], ITEM_HEAD});
                    structure.add(new long[] {item[0] + item[1] - ITEM_TAIL, ITEM_TAIL});
                }
            }
            fetch(objects, shard, structure, 0);
            natives.register(shard.path, held(shard.path), holeSource(shard.path));
        }
    }

    /** A shard file of a sharded staging: its path, object and size. */
    private record ShardFile(Path path, CheckpointLocation object, long size) {}

    /** The staged shard file {@code name}; CorruptCheckpointException when the prefix has no such object. */
    private ShardFile shardFile(String name) {
        Path path = file.resolve(name).normalize().toAbsolutePath();
        CheckpointLocation from = objectOfFile.get(path);
        if (!path.startsWith(file.toAbsolutePath()) || from == null) {
            throw new CorruptCheckpointException(object.resolve(".metadata") + ": names the shard file '" + name
                    + "', which is not an object under " + object + "/", null);
        }
        return new ShardFile(path, from, sizeOfFile.get(path));
    }

    /** What fills a staged sharded directory once its files are in place. */
    private interface ShardedStaging {
        void stage(StagedObject staged, Path dir, Map<String, Long> sizes) throws IOException;
    }

    /**
     * The sharded prefix {@code location} as a directory of its objects, {@code .metadata} and meta.pt
     * fetched whole, each shard file a sparse file of its size, then filled by {@code staging}; null when
     * it holds no {@code .metadata}.
     */
    private static StagedObject shardedDirectory(CheckpointLocation location, StagingNatives natives,
            ShardedStaging staging) {
        S3Objects objects = S3Objects.shared();
        if (!objects.exists(location.resolve(".metadata"))) {
            return null;
        }
        Map<String, Long> sizes = new TreeMap<>();
        String prefix = location.key() + "/";
        objects.list(location).forEach((key, bytes) -> {
            String name = key.substring(prefix.length());
            if (!name.isEmpty() && !name.contains("/")) { // the directory's own files, as on disk
                sizes.put(name, bytes);
            }
        });
        Path dir;
        try {
            dir = Files.createTempDirectory("fabricckpt-inspect-");
        } catch (IOException e) {
            throw new CheckpointStorageException(location + ": cannot stage it in the temporary folder: "
                    + e.getMessage(), e);
        }
        long total = sizes.values().stream().mapToLong(Long::longValue).sum();
        return filled(new StagedObject(natives, location, dir, total), location.toString(), staged -> {
            for (var entry : sizes.entrySet()) {
                String name = entry.getKey();
                if (name.equals(".metadata") || name.equals("meta.pt")) {
                    staged.copy(objects, location.resolve(name), dir.resolve(name), entry.getValue());
                } else {
                    staged.createSparse(location.resolve(name), dir.resolve(name), entry.getValue());
                }
            }
            staging.stage(staged, dir, sizes);
        });
    }

    private static boolean isIndex(CheckpointLocation location) {
        return location.fileName().endsWith(".safetensors.index.json");
    }

    /**
     * A Hugging Face index object staged as a directory, as on disk: the index fetched whole, each shard
     * object it names (beside it) as a sparse file into which only its header is fetched.
     */
    private static StagedObject index(CheckpointLocation index, StagingNatives natives) {
        S3Objects objects = S3Objects.shared();
        long indexSize = objects.size(index); // CheckpointNotFoundException when missing
        String key = index.key();
        String prefix = key.substring(0, key.lastIndexOf('/') + 1);
        String shown = "s3://" + index.bucket() + "/" + prefix;
        Path dir;
        try {
            dir = Files.createTempDirectory("fabricckpt-index-");
        } catch (IOException e) {
            throw new CheckpointStorageException(index + ": cannot stage it in the temporary folder: " + e.getMessage(), e);
        }
        Path indexFile = dir.resolve(index.fileName());
        StagedObject object = new StagedObject(natives, index, dir, indexFile, shown.substring(0, shown.length() - 1), 0);
        return filled(object, index.toString(), staged -> {
            staged.copy(objects, index, indexFile, indexSize);
            long total = indexSize;
            for (String name : natives.indexFiles(indexFile)) {
                CheckpointLocation shard = CheckpointLocation.ofObject(index.bucket(), prefix + name);
                long size = objects.size(shard);
                total += size;
                staged.fetchOutline(objects, shard, dir.resolve(name), size);
            }
            staged.size = total;
        });
    }

    /** What stages a checkpoint's bytes into a fresh {@link StagedObject}. */
    private interface Staging {
        void stage(StagedObject staged) throws IOException;
    }

    /**
     * {@code staged} once {@code staging} has filled it. On a failure it is closed (its files removed)
     * and the failure thrown: a format error named after the object ({@link #named}), a failure of the
     * temporary folder as a CheckpointStorageException naming {@code url}.
     */
    private static StagedObject filled(StagedObject staged, String url, Staging staging) {
        try {
            staging.stage(staged);
            return staged;
        } catch (IOException e) {
            staged.close();
            throw new CheckpointStorageException(url + ": cannot stage it in the temporary folder: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            staged.close();
            throw staged.named(e);
        }
    }

    /** Stages {@code from} in the sparse file {@code to}: its first bytes, then what its outline reads, round by round. */
    private void fetchOutline(S3Objects objects, CheckpointLocation from, Path to, long bytes) throws IOException {
        createSparse(from, to, bytes);
        fetch(objects, from, to, bytes, List.of(new long[] {0, Math.min(bytes, EDGE)}), GAP);
        for (int round = 0; ; round++) {
            List<long[]> missing = natives.rangesMissing(to, held(to));
            if (missing.isEmpty()) {
                return;
            }
            if (round == MAX_ROUNDS) {
                throw new CheckpointStorageException(from + ": still names unread ranges after " + MAX_ROUNDS
                        + " rounds of fetches", null);
            }
            fetch(objects, from, to, bytes, missing, GAP);
        }
    }

    private void copy(S3Objects objects, CheckpointLocation from, Path to, long bytes) throws IOException {
        // The copy is written through a mapping, where a full disk would fault: refuse it up front.
        long free = Files.getFileStore(to.getParent()).getUsableSpace();
        if (bytes > free) {
            throw new CheckpointStorageException(from + ": it is copied to the temporary folder " + to.getParent()
                    + " first, which needs " + bytes + " bytes there; " + free + " are free (another folder:"
                    + " FABRICCKPT_JAVA_OPTS=-Djava.io.tmpdir=DIR)", null);
        }
        try (RandomAccessFile sparse = new RandomAccessFile(to.toFile(), "rw")) {
            sparse.setLength(bytes);
        }
        objects.downloadInto(from, to, 0, bytes);
        fetchedBytes += bytes;
        staged(from, to, 0, bytes);
    }

    /** Creates {@code to} as a sparse file of {@code bytes}, all holes, to hold bytes of {@code from}. */
    private void createSparse(CheckpointLocation from, Path to, long bytes) throws IOException {
        try (RandomAccessFile sparse = new RandomAccessFile(to.toFile(), "rw")) {
            sparse.setLength(bytes);
        }
        objectOfFile.put(to.toAbsolutePath(), from);
        sizeOfFile.put(to.toAbsolutePath(), bytes);
    }

    /** The ranges ({offset, length}) of the staged file {@code file} that hold its object's bytes. */
    private List<long[]> held(Path file) {
        return bytesInFile.getOrDefault(file.toAbsolutePath(), List.of());
    }

    /** Records that {@code [offset, offset + length)} of {@code to} holds those bytes of {@code from}. */
    private void staged(CheckpointLocation from, Path to, long offset, long length) {
        Path file = to.toAbsolutePath();
        objectOfFile.put(file, from);
        sizeOfFile.putIfAbsent(file, offset + length);
        bytesInFile.computeIfAbsent(file, k -> new ArrayList<>()).add(new long[] {offset, length});
    }

    /** The staged file or directory (a staged Hugging Face index: the index file inside its directory). */
    public Path path() {
        return read;
    }

    /** The object's bytes (a staged outline's). */
    public long size() {
        return size;
    }

    /** Bytes fetched from the object: its staged structure, and what was read of its holes. */
    public long fetchedBytes() {
        return fetchedBytes + (holes != null ? holes.fetchedBytes() : 0);
    }

    /** {@code text} (a message about the staged file) naming the object instead. */
    public String naming(String text) {
        return naming(text, false);
    }

    /** The same, with the object's URL put first when the text does not start with it (a summary of a directory). */
    public String naming(String text, boolean leading) {
        if (text == null) {
            return null;
        }
        String named = text.replace(file.toAbsolutePath().toString(), shown);
        return leading && !named.startsWith(shown) ? object + ": " + named : named;
    }

    /** A native call's format error renamed to the object ({@link #naming}); any other exception as it is. */
    public RuntimeException named(RuntimeException e) {
        return natives.isFormatError(e) ? natives.withMessage(e, naming(e.getMessage())) : e;
    }

    private void fetch(S3Objects objects, List<long[]> ranges) {
        fetch(objects, object, file, size, ranges, GAP);
    }

    private void fetch(S3Objects objects, ShardFile shard, List<long[]> ranges, long gap) {
        fetch(objects, shard.object, shard.path, shard.size, ranges, gap);
    }

    /**
     * Fetches the ranges of {@code from} (those less than {@code gap} apart as one, clipped to its
     * {@code bytes}) into the same ranges of {@code to}, all at once, and records that {@code to} holds them.
     */
    private void fetch(S3Objects objects, CheckpointLocation from, Path to, long bytes, List<long[]> ranges,
            long gap) {
        List<long[]> clipped = ranges.stream().filter(r -> r[0] < bytes)
                .map(r -> new long[] {r[0], Math.min(r[1], bytes - r[0])}).toList();
        try {
            for (long[] r : objects.downloadInto(from, to, clipped, gap)) {
                staged(from, to, r[0], r[1]);
                fetchedBytes += r[1];
            }
        } catch (IOException e) {
            throw new CheckpointStorageException(from + ": staging failed: " + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        if (holes != null) {
            objectOfFile.keySet().forEach(natives::unregister);
        }
        try (var paths = Files.walk(file)) {
            paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException | java.io.UncheckedIOException ignored) {
            // what is left in the temporary folder is harmless
        }
    }
}
