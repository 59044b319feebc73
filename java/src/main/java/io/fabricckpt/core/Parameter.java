package io.fabricckpt.core;

import org.bytedeco.pytorch.Tensor;

/**
 * A {@code torch.nn.Parameter} stored as such (torch.save of a parameter rather than of a
 * state dict, which holds plain tensors).
 * <p>Thread-safety: Immutable as a record; the tensor is as thread-safe as libtorch tensors are (do not
 * write it from two threads).
 */
public record Parameter(Tensor data, boolean requiresGrad) {}
