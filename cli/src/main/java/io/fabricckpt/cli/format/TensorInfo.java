package io.fabricckpt.cli.format;

/**
 * A tensor of a checkpoint as the command line shows it: its dtype (c10's name, e.g. {@code Float}),
 * shape and bytes, whether it was saved as an {@code nn.Parameter}, and where its data is: an
 * {@link OutlineNode} of a file read without libtorch, or a libtorch tensor the library read.
 */
public record TensorInfo(String dtype, long[] shape, long nbytes, boolean parameter, Object source) {
    public TensorInfo {
        shape = shape.clone();
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }
}
