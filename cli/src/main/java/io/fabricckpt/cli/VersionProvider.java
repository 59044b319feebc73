package io.fabricckpt.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;
import picocli.CommandLine;

/**
 * {@code fabric-ckpt --version}: this build and the libtorch it was built against, from the CLI's own
 * build resource (no native code loads, no library internals are needed).
 */
final class VersionProvider implements CommandLine.IVersionProvider {
    private static final String RESOURCE = "/io/fabricckpt/cli/version.properties";

    @Override
    public String[] getVersion() {
        Properties p = new Properties();
        try (InputStream in = VersionProvider.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(RESOURCE + " is missing from the fabric-ckpt-cli jar");
            }
            p.load(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return new String[] {"fabric-ckpt " + p.getProperty("version") + " (libtorch " + p.getProperty("torch.version")
                + ", JavaCPP PyTorch preset " + p.getProperty("pytorch.preset.version") + ")"};
    }
}
