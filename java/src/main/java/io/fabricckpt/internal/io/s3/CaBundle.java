package io.fabricckpt.internal.io.s3;

import io.fabricckpt.core.CheckpointStorageException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Collection;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;

/**
 * The trust managers of a PEM certificate bundle ({@code AWS_CA_BUNDLE}): an https endpoint is trusted
 * when its chain ends at one of the bundle's certificates, and only then, as botocore and the AWS CLI
 * treat the same file (it replaces the default roots, it does not add to them).
 */
final class CaBundle {
    private CaBundle() {}

    static TrustManager[] trustManagers(Path bundle) {
        Collection<? extends Certificate> certificates;
        try (InputStream in = Files.newInputStream(bundle)) {
            certificates = CertificateFactory.getInstance("X.509").generateCertificates(in);
        } catch (IOException e) {
            throw new CheckpointStorageException("AWS_CA_BUNDLE=" + bundle + ": cannot read it: " + e, e);
        } catch (GeneralSecurityException e) {
            throw new CheckpointStorageException("AWS_CA_BUNDLE=" + bundle
                    + ": not a PEM file of X.509 certificates: " + e.getMessage(), e);
        }
        if (certificates.isEmpty()) {
            throw new CheckpointStorageException("AWS_CA_BUNDLE=" + bundle + ": holds no certificate", null);
        }
        try {
            KeyStore roots = KeyStore.getInstance(KeyStore.getDefaultType());
            roots.load(null, null);
            int n = 0;
            for (Certificate certificate : certificates) {
                roots.setCertificateEntry("ca-" + n++, certificate);
            }
            TrustManagerFactory factory = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            factory.init(roots);
            return factory.getTrustManagers();
        } catch (IOException | GeneralSecurityException e) {
            throw new CheckpointStorageException("AWS_CA_BUNDLE=" + bundle + ": cannot trust its certificates: " + e, e);
        }
    }
}
