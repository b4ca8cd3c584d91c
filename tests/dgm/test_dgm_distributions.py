"""fastgen.dgm distributions: parameters, sampling, densities, joints, renamed views, text, errors."""

from __future__ import annotations

import pytest
import torch
import torch.distributions as td
import torch.nn.functional as F
from torch import nn

import fastgen
from fastgen import dgm
from fastgen.dgm import DistributionError

from dgm_parts import Classifier, Generator, Inference


def test_normal_sample_is_fastgen_reparameterize_and_log_prob_matches_torch(vae_parts):
    q, _, _, x = vae_parts
    params = q.get_params({"x": x})
    assert set(params) == {"loc", "scale"}
    drawn = q.sample({"x": x}, reparam=True, generator=torch.Generator().manual_seed(3))
    assert set(drawn) == {"x", "z"} and drawn["x"] is x and drawn["z"].requires_grad
    expected = fastgen.reparameterize(params["loc"], 2 * torch.log(params["scale"]),
                                      generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(drawn["z"], expected)
    reference = td.Independent(td.Normal(params["loc"], params["scale"]), 1).log_prob(drawn["z"])
    torch.testing.assert_close(q.get_log_prob({"x": x, "z": drawn["z"]}), reference)
    assert not q.sample({"x": x})["z"].requires_grad  # reparam=False: no gradient
    torch.testing.assert_close(q.sample_mean({"x": x}), params["loc"])
    assert q.sample({"x": x}, return_all=False).keys() == {"z"}


def test_normal_from_logvar_and_entropy():
    torch.manual_seed(0)
    q = Inference(logvar=True)
    x = torch.rand(4, 12)
    params = q.get_params(x)  # a bare tensor stands for the one conditioning variable
    z = torch.randn(4, 3)
    scale = torch.exp(0.5 * params["logvar"])
    torch.testing.assert_close(q.get_log_prob({"x": x, "z": z}),
                               td.Independent(td.Normal(params["loc"], scale), 1).log_prob(z))
    torch.testing.assert_close(q.get_entropy({"x": x}), td.Independent(td.Normal(params["loc"], scale), 1).entropy())


@pytest.mark.parametrize("probs", [True, False])
def test_bernoulli_log_prob_from_probs_or_logits(probs):
    torch.manual_seed(0)
    p = Generator(probs=probs)
    z, x = torch.randn(6, 3), torch.rand(6, 12)
    params = p.get_params({"z": z})
    reference = td.Independent(td.Bernoulli(validate_args=False, **params), 1).log_prob(x)
    torch.testing.assert_close(p.sample_mean({"z": z}), td.Bernoulli(validate_args=False, **params).mean)
    torch.testing.assert_close(p.get_log_prob({"x": x, "z": z}), reference, rtol=1e-5, atol=1e-4)


def test_bernoulli_from_saturated_probs_is_finite():
    class Saturated(dgm.Bernoulli):
        def __init__(self):
            super().__init__(cond_var=["z"], var=["x"])

        def forward(self, z):
            return {"probs": torch.sigmoid(40 * z)}  # exactly 0 and 1 in float32

    z = torch.tensor([[-1.0, 1.0]], requires_grad=True)
    value = Saturated().get_log_prob({"z": z, "x": torch.tensor([[1.0, 0.0]])})
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_categorical_log_prob_entropy_and_sampling():
    torch.manual_seed(0)
    q, x = Classifier(), torch.rand(7, 12)
    logits = q.get_params({"x": x})["logits"]
    y = F.one_hot(torch.randint(0, 4, (7,)), 4).float()
    reference = td.Categorical(logits=logits)
    torch.testing.assert_close(q.get_log_prob({"x": x, "y": y}), reference.log_prob(y.argmax(-1)))
    torch.testing.assert_close(q.get_entropy({"x": x}), reference.entropy())
    torch.testing.assert_close(q.sample_mean({"x": x}), torch.softmax(logits, -1))
    drawn = q.sample({"x": x})["y"]
    assert drawn.shape == (7, 4) and torch.equal(drawn.sum(-1), torch.ones(7))
    prior = dgm.Categorical(probs=torch.full((4,), 0.25), var=["y"], name="p")
    assert prior.features_shape == (4,)
    torch.testing.assert_close(prior.get_log_prob({"y": y}), torch.full((7,), -torch.log(torch.tensor(4.0)).item()))
    with pytest.raises(DistributionError, match=r"Categorical q\(y\|x\).*'y'.*one-hot.*F.one_hot"):
        q.get_log_prob({"x": x, "y": y.argmax(-1)})


def test_unconditioned_parameters_fixed_or_learnable():
    prior = dgm.Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[5])
    assert list(prior.parameters()) == [] and prior.loc.shape == (5,)  # buffers, expanded once
    assert prior.is_standard()
    assert prior.sample(batch_n=3)["z"].shape == (3, 5)
    assert prior.sample({"x": torch.zeros(4, 2)})["z"].shape == (4, 5)  # batch from x_dict
    learned = dgm.Normal(loc=nn.Parameter(torch.zeros(5)), logvar=nn.Parameter(torch.zeros(5)), var=["z"])
    assert len(list(learned.parameters())) == 2 and learned.features_shape == (5,)
    assert not learned.is_standard()
    prior.loc.add_(1.0)  # an in-place change is noticed
    assert not prior.is_standard()
    z = torch.randn(3, 5)
    torch.testing.assert_close(prior.get_log_prob({"z": z}),
                               td.Independent(td.Normal(torch.ones(5), torch.ones(5)), 1).log_prob(z))


def test_a_fixed_parameter_completes_what_forward_returns():
    class Decoder(dgm.Normal):
        def __init__(self):
            super().__init__(cond_var=["z"], var=["x"], name="p", scale=0.5)
            self.fc = nn.Linear(3, 6)

        def forward(self, z):
            return {"loc": self.fc(z)}

    torch.manual_seed(0)
    p, z, x = Decoder(), torch.randn(4, 3), torch.randn(4, 6)
    loc = p.fc(z)
    assert set(p.get_params({"z": z})) == {"loc", "scale"}
    torch.testing.assert_close(p.get_log_prob({"z": z, "x": x}),
                               td.Independent(td.Normal(loc, torch.full_like(loc, 0.5)), 1).log_prob(x))
    assert p.sample({"z": z})["x"].shape == (4, 6)


def test_joint_factorization_sampling_and_log_prob(vae_parts):
    q, p, prior, x = vae_parts
    joint = p * prior
    assert joint.var == ["x", "z"] and joint.cond_var == []
    assert joint.prob_text == "p(x,z)" and joint.prob_factorized_text == "p(x|z)p_{prior}(z)"
    assert dgm.print_latex(joint) == "p(x,z) = p(x|z)p_{prior}(z)"
    drawn = joint.sample(batch_n=4)
    assert drawn["z"].shape == (4, 3) and drawn["x"].shape == (4, 12)
    expected = p.get_log_prob(drawn) + prior.get_log_prob(drawn)
    torch.testing.assert_close(joint.get_log_prob(drawn), expected)
    posterior = q * dgm.Normal(loc=0.0, scale=1.0, var=["w"], features_shape=[2], name="r")
    assert posterior.cond_var == ["x"] and posterior.prob_text == "q(z,w|x)"
    text = str(joint)
    assert "p(x,z) = p(x|z)p_{prior}(z)" in text and "Linear(in_features=3, out_features=16" in text
    with pytest.raises(DistributionError, match="both"):
        p * p


def test_replace_var_shares_the_network():
    torch.manual_seed(0)
    q = Inference()
    q_u = q.replace_var(x="x_u", z="z_u")
    assert q_u.prob_text == "q(z_u|x_u)" and q.prob_text == "q(z|x)"
    assert list(q_u.parameters()) == list(q.parameters())
    x = torch.rand(3, 12)
    torch.testing.assert_close(q_u.get_params({"x_u": x})["loc"], q.get_params({"x": x})["loc"])
    with pytest.raises(DistributionError, match="x_u"):
        q_u.get_params({"x": x})
    with pytest.raises(DistributionError, match="not its variables"):
        q.replace_var(y="w")


# -- the mistakes users make get errors naming the distribution and the variable ---------------

def test_forward_with_wrong_keys():
    class Wrong(dgm.Normal):
        def __init__(self):
            super().__init__(cond_var=["x"], var=["z"], name="q")

        def forward(self, x):
            return {"mean": x, "scale": x.exp()}

    with pytest.raises(DistributionError, match=r"Normal q\(z\|x\).*\['mean', 'scale'\].*\{loc, scale\} or \{loc, logvar\}"):
        Wrong().get_log_prob({"x": torch.zeros(2, 3), "z": torch.zeros(2, 3)})

    class Tuple(dgm.Bernoulli):
        def __init__(self):
            super().__init__(cond_var=["z"], var=["x"], name="p")

        def forward(self, z):
            return z, z

    with pytest.raises(DistributionError, match=r"Bernoulli p\(x\|z\): forward must return a dict.*tuple"):
        Tuple().sample({"z": torch.zeros(2, 3)})


def test_missing_conditioning_variable(vae_parts):
    q, p, prior, x = vae_parts
    with pytest.raises(DistributionError, match=r"Normal q\(z\|x\) needs variable 'x'.*\['y'\]"):
        q.sample({"y": x})
    loss = dgm.StochasticReconstructionLoss(q, p).mean()
    with pytest.raises(DistributionError, match=r"q\(z\|x\) needs variable 'x'"):
        loss.eval({"image": x})
    with pytest.raises(DistributionError, match=r"log_prob needs the value of 'x'"):
        p.get_log_prob({"z": torch.zeros(5, 3)})


def test_shapes_that_do_not_match_features_shape():
    class Encoder(dgm.Normal):
        def __init__(self):
            super().__init__(cond_var=["x"], var=["z"], name="q", features_shape=[4])

        def forward(self, x):
            return {"loc": x, "scale": x.exp()}

    with pytest.raises(DistributionError, match=r"Normal q\(z\|x\): parameter loc has shape \(2, 3\).*features_shape \(4,\)"):
        Encoder().get_log_prob({"x": torch.zeros(2, 3), "z": torch.zeros(2, 4)})
    prior = dgm.Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[4], name="p")
    with pytest.raises(DistributionError, match=r"Normal p\(z\): variable 'z' has shape \(2, 3\)"):
        prior.get_log_prob({"z": torch.zeros(2, 3)})
    with pytest.raises(DistributionError, match="does not broadcast to features_shape"):
        dgm.Normal(loc=torch.zeros(3), scale=1.0, var=["z"], features_shape=[4])


def test_construction_errors():
    class NoX(dgm.Normal):
        def __init__(self):
            super().__init__(cond_var=["x"], var=["z"], name="q")

        def forward(self, image):
            return {}

    with pytest.raises(DistributionError, match=r"Normal q\(z\|x\): NoX.forward\(image\) must take.*\['x'\]"):
        NoX()
    with pytest.raises(DistributionError, match=r"Normal q\(z\|x\) is conditioned on \['x'\]: subclass Normal"):
        dgm.Normal(var=["z"], cond_var=["x"], name="q")
    with pytest.raises(DistributionError, match="appear more than once"):
        dgm.Normal(var=["z"], cond_var=["z"])
    with pytest.raises(DistributionError, match="parameters must be given"):
        dgm.Normal(var=["z"], loc=0.0)
    with pytest.raises(TypeError, match="mean"):
        dgm.Bernoulli(var=["x"], mean=0.5)
    with pytest.raises(DistributionError, match="over one variable"):
        dgm.Normal(var=["z", "w"], loc=0.0, scale=1.0)
