"""The compiled sum of squares behind the CPU training step's gradient norm: equal to float64 NumPy, one value for
any shape, and the step taking it on CPU (MindSpore's ReduceSum elsewhere or without a compiler)."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ms_vit.kernels import reduce as reduce_kernel

pytestmark = pytest.mark.skipif(reduce_kernel.build()[0] is None, reason="no C++ compiler for the reduce kernel")


class _Norm(nn.Cell):
    def __init__(self):
        super().__init__()
        self.op = reduce_kernel.sum_squares_op()

    def construct(self, *grads):
        return ms.ops.addn([self.op(g) for g in grads])


@pytest.mark.parametrize("shapes", [[(7,)], [(3, 5), (1,), (2, 3, 4)], [(1 << 19,), (1024, 769)]])
def test_sum_of_squares_equals_float64(shapes):
    rng = np.random.default_rng(len(shapes))
    grads = [(rng.standard_normal(s) * 10).astype(np.float32) for s in shapes]
    got = _Norm()(*[ms.Tensor(g) for g in grads]).asnumpy()
    want = sum((g.astype(np.float64) ** 2).sum() for g in grads)
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_the_cpu_training_step_takes_it():
    from ms_vit.train.step import _cpu_sum_squares

    assert _cpu_sum_squares() is reduce_kernel.sum_squares_op()
