"""Python twins of the Java test models, shared by the tests and the scripts they start."""
import torch


class Net(torch.nn.Module):
    """The twin of java/src/test/java/io/fabricckpt/Net.java with Net(4, 8, 2): fc1, ReLU, fc2."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
