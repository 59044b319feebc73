package io.fabricckpt.cli;

import io.fabricckpt.cli.format.Outlines;
import io.fabricckpt.internal.io.s3.StagedObject;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "inspect", mixinStandardHelpOptions = true, versionProvider = VersionProvider.class,
        description = {"The keys, dtypes, shapes and sizes in a checkpoint file or sharded directory.",
            "Also lists the globals outside torch's weights_only allowlist, as",
            "torch.serialization.get_unsafe_globals_in_checkpoint does (with --json: an object",
            "{\"unsafe_globals\": [...], \"checkpoint\": tree})."})
final class InspectCli implements Callable<Integer> {
    @Parameters(paramLabel = "PATH", description = {"a torch.save file or a sharded (torch.distributed.checkpoint) directory,",
        "local or s3://bucket/key (a directory: s3://bucket/prefix/)"})
    String location;

    @Option(names = "--json", description = "print the tree as JSON")
    boolean json;

    @Override
    public Integer call() {
        // Only the structure, dtypes and shapes, never a tensor's bytes: the zip directory and data.pkl
        // are read with pread (a 10 GB file inspects as fast as a small one), without libtorch. An
        // s3:// object or sharded prefix is staged with only those ranges fetched (a safetensors
        // object's header; a legacy object, whose storage sizes lie between the storages, whole).
        Object checkpoint;
        List<String> unsafe;
        if (!ObjectLocations.isRemote(location)) {
            Path path = Path.of(location);
            checkpoint = Outlines.read(Paths.readable(path));
            unsafe = Outlines.unsafeGlobals(path);
        } else {
            try (StagedObject staged = stagedForOutline(location)) {
                if (staged == null) {
                    checkpoint = ObjectLocations.read(location);
                    unsafe = ObjectLocations.unsafeGlobals(location);
                } else {
                    try {
                        checkpoint = Outlines.read(staged.path());
                        unsafe = Outlines.unsafeGlobals(staged.path());
                    } catch (Outlines.FormatException e) {
                        throw new CliException(ExitCodes.IO, staged.naming(e.getMessage()));
                    }
                    System.err.printf("%s: read %d of its %d bytes for its outline%n", location,
                            staged.fetchedBytes(), staged.size());
                }
            }
        }
        if (json) {
            String globals = unsafe.stream().map(g -> "\"" + g.replace("\\", "\\\\").replace("\"", "\\\"") + "\"")
                    .collect(Collectors.joining(","));
            System.out.println("{\"unsafe_globals\":[" + globals + "],\"checkpoint\":" + Inspect.json(checkpoint) + "}");
        } else {
            Inspect.print(checkpoint, System.out);
            if (!unsafe.isEmpty()) {
                System.out.println("unsafe globals (outside torch's weights_only allowlist; torch.load(weights_only=True)"
                        + " refuses this file): " + String.join(", ", unsafe));
            }
        }
        return ExitCodes.OK;
    }

    /** An object staged for its outline, else a sharded prefix; null for neither (the library says what is missing). */
    private static StagedObject stagedForOutline(String location) {
        StagedObject object = StagedObject.forOutline(location, FormatStaging.INSTANCE);
        return object != null ? object : StagedObject.forShardedOutline(location, FormatStaging.INSTANCE);
    }
}
