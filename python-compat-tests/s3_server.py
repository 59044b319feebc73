"""A real S3 server for the tests: S3Proxy (the jar the Maven build copies to build/s3proxy/s3proxy.jar,
the same one the JUnit tests start) with its filesystem backend in a temporary folder, on a free
loopback port over http and another over https (a self-signed certificate for 127.0.0.1 made with the
JDK's keytool; its PEM file is `ca_bundle`), as a child process."""
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

ACCESS_KEY = "fabricckpt-test"
SECRET_KEY = "fabricckpt-test-secret"
KEYSTORE_PASSWORD = "fabricckpt-test"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, jar: Path, workdir: Path):
        if not jar.is_file():
            raise RuntimeError(f"{jar} is missing: the Maven build (scripts/build.sh) copies S3Proxy there")
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "s3proxy.log"
        keystore = self._make_certificate(workdir)
        for _ in range(3):  # a port taken between choosing and binding: try another
            port, secure_port = _free_port(), _free_port()
            self.endpoint = f"http://127.0.0.1:{port}"
            self.secure_endpoint = f"https://127.0.0.1:{secure_port}"
            props = workdir / "s3proxy.properties"
            props.write_text("\n".join([
                f"s3proxy.endpoint={self.endpoint}",
                f"s3proxy.secure-endpoint={self.secure_endpoint}",
                f"s3proxy.keystore-path={keystore}",
                f"s3proxy.keystore-password={KEYSTORE_PASSWORD}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={ACCESS_KEY}",
                f"s3proxy.credential={SECRET_KEY}",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={data}", ""]))
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(["java", "-Xmx512m", "-jar", str(jar), "--properties", str(props)],
                                                stdout=log, stderr=subprocess.STDOUT)
            if self._await_listening(port) and self._await_listening(secure_port):
                return
            self.process.kill()
            self.process.wait()
        raise RuntimeError(f"S3Proxy did not start:\n{self.log.read_text()}")

    def _make_certificate(self, workdir):
        """A PKCS#12 keystore holding a new self-signed certificate for 127.0.0.1, and that certificate
        as `ca_bundle` (PEM): what AWS_CA_BUNDLE names for botocore and for Java alike."""
        keytool = Path(shutil.which("java")).resolve().parent / "keytool"
        keystore = workdir / "keystore.p12"
        self.ca_bundle = workdir / "ca.pem"
        subprocess.run([str(keytool), "-genkeypair", "-alias", "s3proxy", "-keyalg", "EC", "-groupname", "secp256r1",
                        "-dname", "CN=127.0.0.1", "-ext", "SAN=ip:127.0.0.1", "-validity", "3",
                        "-storetype", "PKCS12", "-keystore", str(keystore), "-storepass", KEYSTORE_PASSWORD],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([str(keytool), "-exportcert", "-rfc", "-alias", "s3proxy", "-keystore", str(keystore),
                        "-storepass", KEYSTORE_PASSWORD, "-file", str(self.ca_bundle)],
                       check=True, capture_output=True, timeout=60)
        return keystore

    def _await_listening(self, port, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    @property
    def env(self):
        """What a process (s3fs/botocore here, the JVM's SDK in children) needs to use this server.
        Recent botocore sends CRC-32 checksum headers S3Proxy refuses unless these say when_required."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            # Small parts, several in flight, so that checkpoints of tens of MiB take the multipart path.
            "FABRICCKPT_S3_PART_SIZE": "5M",
            "FABRICCKPT_S3_CONCURRENCY": "3",
        }

    def filesystem(self):
        """An s3fs file system on this server (a fresh instance, not fsspec's cached one)."""
        import s3fs
        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                                 skip_instance_cache=True)

    def new_bucket(self, purpose):
        name = f"{purpose}-{uuid.uuid4().hex[:8]}"
        self.filesystem().call_s3("create_bucket", Bucket=name)
        return name

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
