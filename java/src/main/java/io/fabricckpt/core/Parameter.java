package io.fabricckpt.core;

import org.bytedeco.pytorch.Tensor;

/**
 * A {@code torch.nn.Parameter} stored as such (torch.save of a parameter rather than of a
 * state dict, which holds plain tensors).
 */
public record Parameter(Tensor data, boolean requiresGrad) {}
