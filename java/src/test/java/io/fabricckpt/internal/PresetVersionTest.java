package io.fabricckpt.internal;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

class PresetVersionTest {
    @Test
    void buildPropertiesNameWhatThePomBuiltWith() {
        var p = PresetVersion.build();
        assertEquals("2.10.0", p.getProperty("torch.version"));
        assertEquals("2.10.0-1.5.13", p.getProperty("pytorch.preset.version"));
        assertFalse(p.getProperty("version").contains("${"), p.toString());
    }

    @Test
    void theTestClassPathHasThePresetWeBuiltAgainst() {
        List<String> found = PresetVersion.onClassPath(getClass().getClassLoader());
        assertEquals(List.of("2.10.0-1.5.13"), found);
        assertDoesNotThrow(PresetVersion::checkClassPath);
    }

    @Test
    void anotherLibtorchFailsWithOneMessageNamingBoth() {
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class,
                () -> PresetVersion.check("2.10.0-1.5.13", List.of("2.10.0-1.5.13", "2.9.1-1.5.12")));
        assertTrue(e.getMessage().contains("built against libtorch 2.10.0"), e.getMessage());
        assertTrue(e.getMessage().contains("org.bytedeco:pytorch:2.9.1-1.5.12 (libtorch 2.9.1)"), e.getMessage());
    }

    @Test
    void anotherJavacppReleaseOfTheSameLibtorchPasses() {
        assertDoesNotThrow(() -> PresetVersion.check("2.10.0-1.5.13", List.of("2.10.0-1.5.14")));
        assertDoesNotThrow(() -> PresetVersion.check("2.10.0-1.5.13", List.of()));
    }
}
