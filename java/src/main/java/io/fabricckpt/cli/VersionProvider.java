package io.fabricckpt.cli;

import io.fabricckpt.internal.PresetVersion;
import java.util.Properties;
import picocli.CommandLine;

/** {@code fabric-ckpt --version}: this build and the libtorch it was built against (no native code loads). */
final class VersionProvider implements CommandLine.IVersionProvider {
    @Override
    public String[] getVersion() {
        Properties p = PresetVersion.build();
        return new String[] {"fabric-ckpt " + p.getProperty("version") + " (libtorch " + p.getProperty("torch.version")
                + ", JavaCPP PyTorch preset " + p.getProperty("pytorch.preset.version") + ")"};
    }
}
