"""CoupledSGD / make_sgd: the paper's PyTorch SGD (coupled L2 decay) in Keras 3."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.run.optimizers import CoupledSGD, make_sgd

LR, MOM, WD = 0.1, 0.9, 5e-4


def _problem(seed=0):
    """A tiny least-squares model: fixed data, two weight tensors."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 5)).astype("float32")
    t = rng.normal(size=(8, 3)).astype("float32")
    w0 = rng.normal(size=(5, 3)).astype("float32")
    b0 = rng.normal(size=(3,)).astype("float32")
    return x, t, w0, b0


def _grads_np(x, t, w, b):
    """d/d(w,b) of mean((x w + b - t)^2)."""
    r = x @ w + b - t
    gw = 2.0 * x.T @ r / r.size
    gb = 2.0 * r.sum(0) / r.size
    return gw, gb


def _keras_steps(opt, steps=3, seed=0):
    x, t, w0, b0 = _problem(seed)
    w, b = keras.Variable(w0, name="w"), keras.Variable(b0, name="b")
    x, t = tf.constant(x), tf.constant(t)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(x @ w + b - t))
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
    return np.asarray(w), np.asarray(b)


def _torch_style_np(lrs, momentum=MOM, wd=WD, nesterov=False, seed=0):
    """Hand-written PyTorch SGD (dampening 0), float64."""
    x, t, w0, b0 = _problem(seed)
    params = [w0.astype("float64"), b0.astype("float64")]
    bufs = [None, None]
    x, t = x.astype("float64"), t.astype("float64")
    wds = wd if isinstance(wd, tuple) else (wd, wd)
    for lr in lrs:
        grads = _grads_np(x, t, *params)
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + wds[i] * p
            if momentum:
                bufs[i] = g.copy() if bufs[i] is None else momentum * bufs[i] + g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = p - lr * g
    return params


def test_coupled_matches_hand_computed_pytorch_sgd():
    w, b = _keras_steps(make_sgd(LR, momentum=MOM, weight_decay=WD))
    ref_w, ref_b = _torch_style_np([LR] * 3)
    np.testing.assert_allclose(w, ref_w, atol=1e-6)
    np.testing.assert_allclose(b, ref_b, atol=1e-6)
    # the decay matters at this size: decoupled Keras SGD is measurably different
    dw, _ = _keras_steps(make_sgd(LR, momentum=MOM, weight_decay=0.05, weight_decay_mode="decoupled"))
    cw, _ = _keras_steps(make_sgd(LR, momentum=MOM, weight_decay=0.05))
    assert np.abs(dw - cw).max() > 1e-4


def test_coupled_with_schedule_and_nesterov_and_no_momentum():
    # lr drops after the 2nd step: the PyTorch buffer holds no lr, Keras' velocity would
    sched = keras.optimizers.schedules.PiecewiseConstantDecay([1], [LR, LR * 0.2])
    w, b = _keras_steps(CoupledSGD(sched, momentum=MOM, weight_decay_l2=WD), steps=4)
    ref_w, ref_b = _torch_style_np([LR, LR, LR * 0.2, LR * 0.2])
    np.testing.assert_allclose(w, ref_w, atol=1e-6)
    np.testing.assert_allclose(b, ref_b, atol=1e-6)
    w, _ = _keras_steps(CoupledSGD(LR, momentum=MOM, nesterov=True, weight_decay_l2=WD))
    np.testing.assert_allclose(w, _torch_style_np([LR] * 3, nesterov=True)[0], atol=1e-6)
    w, _ = _keras_steps(CoupledSGD(LR, momentum=0.0, weight_decay_l2=WD))
    np.testing.assert_allclose(w, _torch_style_np([LR] * 3, momentum=0.0)[0], atol=1e-6)


def test_coupled_matches_torch_optim_sgd():
    torch = pytest.importorskip("torch")
    x, t, w0, b0 = _problem()
    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    opt = torch.optim.SGD([tw, tb], lr=LR, momentum=MOM, weight_decay=WD)
    tx, tt = torch.tensor(x), torch.tensor(t)
    for _ in range(3):
        opt.zero_grad()
        torch.mean((tx @ tw + tb - tt) ** 2).backward()
        opt.step()
    w, b = _keras_steps(make_sgd(LR, momentum=MOM, weight_decay=WD))
    np.testing.assert_allclose(w, tw.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(b, tb.detach().numpy(), atol=1e-6)


def test_decoupled_mode_is_keras_sgd():
    opt = make_sgd(LR, momentum=MOM, weight_decay=WD, weight_decay_mode="decoupled")
    assert type(opt) is keras.optimizers.SGD and opt.weight_decay == WD
    ref = keras.optimizers.SGD(LR, momentum=MOM, weight_decay=WD)
    for a, r in zip(_keras_steps(opt), _keras_steps(ref)):
        np.testing.assert_array_equal(a, r)
    assert make_sgd(LR, weight_decay=0.0, weight_decay_mode="decoupled").weight_decay is None


def test_keras_decoupled_decay_not_applied_twice():
    opt = make_sgd(LR, momentum=MOM, weight_decay=WD)
    assert opt.weight_decay is None and opt.weight_decay_l2 == WD
    with pytest.raises(ValueError, match="weight_decay_l2"):
        CoupledSGD(LR, weight_decay=1e-4)


def test_exclude_from_weight_decay():
    opt = CoupledSGD(LR, momentum=MOM, weight_decay_l2=0.05)
    opt.exclude_from_weight_decay(var_names=["b"])
    w, b = _keras_steps(opt)
    ref_w, ref_b = _torch_style_np([LR] * 3, wd=(0.05, 0.0))  # only w decays
    np.testing.assert_allclose(w, ref_w, atol=1e-6)
    np.testing.assert_allclose(b, ref_b, atol=1e-6)
    assert np.abs(b - _torch_style_np([LR] * 3, wd=0.05)[1]).max() > 1e-5


def test_serialization_round_trip(tmp_path):
    sched = keras.optimizers.schedules.PiecewiseConstantDecay([2], [LR, LR * 0.2])
    opt = make_sgd(sched, momentum=0.8, weight_decay=1e-3, nesterov=True, clipnorm=1.0)
    cfg = keras.optimizers.serialize(opt)
    back = keras.optimizers.deserialize(cfg)
    assert isinstance(back, CoupledSGD)
    assert back.weight_decay_l2 == 1e-3 and back.momentum == 0.8 and back.nesterov
    assert back.clipnorm == 1.0 and back.weight_decay is None
    assert isinstance(back._learning_rate, keras.optimizers.schedules.PiecewiseConstantDecay)
    assert back._learning_rate.get_config() == sched.get_config()

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    model.compile(optimizer=make_sgd(0.05, weight_decay=1e-3), loss="mse")
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    model.fit(xs, ys, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, CoupledSGD) and loaded.optimizer.weight_decay_l2 == 1e-3
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))
    # continued training agrees
    model.fit(xs, ys, epochs=1, batch_size=8, verbose=0, shuffle=False)
    loaded.fit(xs, ys, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_mirrored_strategy_matches_single_device():
    """Two replicas with the global batch split give the single-device update.

    ReductionToOneDevice: no collective ops, whose instance keys can clash with
    strategies created by earlier tests in the same process.
    """
    x, t, w0, b0 = _problem()
    results = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        with strategy.scope():
            inp = keras.Input((5,))
            layer = keras.layers.Dense(3)
            model = keras.Model(inp, layer(inp))
            layer.set_weights([w0, b0])
            model.compile(optimizer=make_sgd(LR, momentum=MOM, weight_decay=WD), loss="mse")
        model.fit(x, t, batch_size=8, epochs=3, shuffle=False, verbose=0)
        results.append(layer.get_weights())
    ref_w, ref_b = _torch_style_np([LR] * 3)
    for got in results:
        np.testing.assert_allclose(got[0], ref_w, atol=1e-5)
        np.testing.assert_allclose(got[1], ref_b, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(weight_decay="lots"), "weight_decay"),
        (dict(weight_decay_mode="adamw"), "weight_decay_mode"),
        (dict(momentum=1.5), "momentum"),
        (dict(momentum=0.0, nesterov=True), "nesterov"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_sgd(LR, **kwargs)


def test_bad_arguments_direct():
    with pytest.raises(ValueError, match="weight_decay_l2"):
        CoupledSGD(LR, weight_decay_l2=-1.0)
