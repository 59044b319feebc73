package io.fabricckpt.internal;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URL;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Enumeration;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;

/**
 * The libtorch that fabric-ckpt's natives were built against must be the one the JavaCPP PyTorch
 * preset on the class path ships: libfabricckpt.so links the preset's libtorch_cpu.so by SONAME, and
 * another version would fail at some symbol, or worse, mid-way. Checked before anything native loads.
 */
public final class PresetVersion {
    private static final String PRESET_POM = "META-INF/maven/org.bytedeco/pytorch/pom.properties";

    private PresetVersion() {}

    /** What this build was made with: {@code version}, {@code torch.version}, {@code pytorch.preset.version}. */
    public static Properties build() {
        Properties p = new Properties();
        try (InputStream in = PresetVersion.class.getResourceAsStream("/io/fabricckpt/build.properties")) {
            if (in == null) {
                throw new IllegalStateException("io/fabricckpt/build.properties is missing from the fabric-ckpt jar");
            }
            p.load(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return p;
    }

    /** The versions of org.bytedeco:pytorch on the class path (its classes jar and its natives jars). */
    public static List<String> onClassPath(ClassLoader loader) {
        Set<String> versions = new LinkedHashSet<>();
        try {
            Enumeration<URL> poms = loader.getResources(PRESET_POM);
            while (poms.hasMoreElements()) {
                Properties p = new Properties();
                try (InputStream in = poms.nextElement().openStream()) {
                    p.load(in);
                }
                if (p.getProperty("version") != null) {
                    versions.add(p.getProperty("version").trim());
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        if (versions.isEmpty()) { // a repackaged jar without Maven's metadata: the manifest, if any
            Package p = org.bytedeco.pytorch.global.torch.class.getPackage();
            if (p != null && p.getImplementationVersion() != null) {
                versions.add(p.getImplementationVersion().trim());
            }
        }
        return new ArrayList<>(versions);
    }

    /** The libtorch version of a preset version: {@code 2.10.0-1.5.13} -> {@code 2.10.0}. */
    static String libtorch(String presetVersion) {
        int dash = presetVersion.indexOf('-');
        return dash < 0 ? presetVersion : presetVersion.substring(0, dash);
    }

    /**
     * Throws an {@link UnsatisfiedLinkError} naming both versions when a preset on the class path
     * carries another libtorch than {@code builtWith} (a preset version such as 2.10.0-1.5.13).
     * Nothing found (no metadata at all) is not an error.
     */
    public static void check(String builtWith, Collection<String> found) {
        String want = libtorch(builtWith);
        for (String version : found) {
            if (!libtorch(version).equals(want)) {
                throw new UnsatisfiedLinkError("fabric-ckpt was built against libtorch " + want
                        + " (JavaCPP PyTorch preset org.bytedeco:pytorch:" + builtWith + "), but the class path has "
                        + "org.bytedeco:pytorch:" + version + " (libtorch " + libtorch(version) + "); depend on "
                        + "io.fabricckpt:fabric-ckpt-platform alone, or pin org.bytedeco:pytorch to " + builtWith);
            }
        }
    }

    /** {@link #check} of this build against the class path of this class. */
    public static void checkClassPath() {
        ClassLoader loader = PresetVersion.class.getClassLoader();
        check(build().getProperty("pytorch.preset.version"),
                onClassPath(loader != null ? loader : ClassLoader.getSystemClassLoader()));
    }
}
