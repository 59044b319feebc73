package io.fabricckpt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.fabricckpt.core.CheckpointException;
import io.fabricckpt.core.CheckpointNotFoundException;
import io.fabricckpt.core.CheckpointStorageException;
import io.fabricckpt.core.CorruptCheckpointException;
import io.fabricckpt.core.IncompatibleKeys;
import io.fabricckpt.core.PyOrderedDict;
import io.fabricckpt.core.StateMismatchException;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Each kind of failure is its own exception type, with what code needs to act on it. */
class ErrorsTest {
    @TempDir
    Path dir;

    private final Fabric fabric = new Fabric();

    @Test
    void aMissingFileIsNotFoundWithTheNioCause() {
        Path missing = dir.resolve("missing.ckpt");
        CheckpointNotFoundException e = assertThrows(CheckpointNotFoundException.class, () -> fabric.load(missing));
        NoSuchFileException cause = assertInstanceOf(NoSuchFileException.class, e.getCause());
        assertEquals(missing.toString(), cause.getFile());
        assertTrue(e.getMessage().contains(missing.toString()), e.getMessage());
        assertThrows(CheckpointNotFoundException.class, () -> TorchFiles.read(missing));
        assertThrows(CheckpointNotFoundException.class, () -> TorchFiles.verify(missing));
    }

    @Test
    void aDirectoryWhereAFileShouldBeIsAStorageError() throws IOException {
        Path folder = Files.createDirectory(dir.resolve("folder.ckpt"));
        CheckpointStorageException e = assertThrows(CheckpointStorageException.class, () -> fabric.load(folder));
        assertInstanceOf(FileSystemException.class, e.getCause());
        assertTrue(e.getMessage().contains("not a regular file"), e.getMessage());
    }

    @Test
    void aCorruptFileIsCorruptAndNamesTheFile() throws IOException {
        Path file = dir.resolve("corrupt.ckpt");
        TorchFiles.write(file, Map.of("step", 3L));
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(raf.length() / 2); // the zip directory is gone
        }
        CorruptCheckpointException e = assertThrows(CorruptCheckpointException.class, () -> fabric.load(file));
        assertTrue(e.getMessage().contains(file.toString()), e.getMessage());

        Path notACheckpoint = Files.writeString(dir.resolve("notes.ckpt"), "just some text, not a zip");
        assertThrows(CorruptCheckpointException.class, () -> TorchFiles.read(notACheckpoint));
    }

    @Test
    void aRequestedKeyTheFileLacksIsAMismatchListingIt() {
        Path file = dir.resolve("state.ckpt");
        fabric.save(file, Map.of("step", 3L));
        Map<String, Object> state = new LinkedHashMap<>(Map.of("step", 0L, "epoch", 0L, "lr", 0.1));
        StateMismatchException e = assertThrows(StateMismatchException.class, () -> fabric.load(file, state));
        assertEquals(List.of("epoch", "lr"), e.missingKeys().stream().sorted().toList());
        assertTrue(e.getMessage().contains("strict=false"), e.getMessage());
        assertEquals(0L, state.get("step")); // nothing restored before the check failed
    }

    @Test
    void aModelThatDoesNotMatchListsMissingUnexpectedAndShapes() {
        Path file = dir.resolve("model.ckpt");
        fabric.save(file, Map.of("model", new Net(4, 8, 2)));
        // other shapes: fc1 [3, 4] instead of [8, 4], and so on
        StateMismatchException shapes = assertThrows(StateMismatchException.class,
                () -> fabric.load(file, Map.of("model", new Net(4, 3, 2))));
        assertTrue(shapes.shapeMismatches().contains("fc1.weight: checkpoint [8, 4], model [3, 4]"),
                shapes.shapeMismatches().toString());

        // the same parameters under other names: the raw state dict, renamed
        PyOrderedDict saved = StateDicts.of(new Net(4, 8, 2));
        PyOrderedDict renamed = new PyOrderedDict();
        saved.forEach((k, v) -> renamed.put(k.equals("fc2.bias") ? "head.bias" : k, v));
        StateMismatchException keys = assertThrows(StateMismatchException.class,
                () -> StateDicts.load(new Net(4, 8, 2), renamed, true));
        assertEquals(List.of("fc2.bias"), keys.missingKeys());
        assertEquals(List.of("head.bias"), keys.unexpectedKeys());
        assertTrue(keys.getMessage().startsWith("Error(s) in loading state_dict for "), keys.getMessage());

        // not strict: loaded where it matches, and what did not is returned, as Python's _IncompatibleKeys
        IncompatibleKeys left = StateDicts.load(new Net(4, 8, 2), renamed, false);
        assertEquals(new IncompatibleKeys(List.of("fc2.bias"), List.of("head.bias")), left);
        assertTrue(StateDicts.load(new Net(4, 8, 2), saved, true).isEmpty());
    }

    @Test
    void anUnmodifiableStateSaysWhyBeforeRestoringAnything() {
        Path file = dir.resolve("plain.ckpt");
        Net model = new Net(4, 8, 2);
        fabric.save(file, Map.of("model", model, "step", 7L));
        Net fresh = new Net(4, 8, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> fabric.load(file, Map.of("model", fresh, "step", 0L)));
        assertTrue(e.getMessage().contains("'step'") && e.getMessage().contains("unmodifiable"), e.getMessage());
        // a state of models only needs no copying back: Map.of works, and a Map<String, Net> is accepted
        Map<String, Net> models = Map.of("model", fresh);
        assertEquals(Map.of("step", 7L), fabric.load(file.toString(), models));
    }

    @Test
    void everyTypedErrorIsACheckpointException() {
        for (Class<?> type : List.of(CheckpointNotFoundException.class, CheckpointStorageException.class,
                CorruptCheckpointException.class, StateMismatchException.class,
                io.fabricckpt.core.DistributedException.class)) {
            assertTrue(CheckpointException.class.isAssignableFrom(type), type.getName());
        }
    }
}
