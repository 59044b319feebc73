/**
 * fabric-ckpt: Lightning Fabric's checkpoints (torch.save files and torch.distributed.checkpoint
 * directories) for the JVM. The API is {@code io.fabricckpt} (Fabric, TorchFiles, StateDicts,
 * AsyncSaver), {@code io.fabricckpt.core} (values, options, locations, exceptions) and
 * {@code io.fabricckpt.dist} (strategies, process groups, sharded modules); everything under
 * {@code io.fabricckpt.internal} is the implementation and may change in any release.
 */
module io.fabricckpt {
    requires transitive org.bytedeco.javacpp;
    requires transitive org.bytedeco.pytorch;
    requires org.slf4j;
    // s3:// locations (io.fabricckpt.internal.io.s3)
    requires software.amazon.awssdk.services.s3;
    requires software.amazon.awssdk.core;
    requires software.amazon.awssdk.auth;
    requires software.amazon.awssdk.regions;
    requires software.amazon.awssdk.http;
    requires software.amazon.awssdk.http.apache;
    requires software.amazon.awssdk.awscore;
    requires software.amazon.awssdk.utils;

    exports io.fabricckpt;
    exports io.fabricckpt.core;
    exports io.fabricckpt.dist;

    // JavaCPP reads the peer classes' annotations and loads their JNI library reflectively.
    opens io.fabricckpt.internal to org.bytedeco.javacpp;
}
