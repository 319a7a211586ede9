"""Bad settings raise errors that name what was wrong and the valid choices."""
import pytest
import torch

from analysis.toy_experiment import parse_args
from envs.toy_tasks import make_task
from tests.conftest import random_lgssm
from world_models import bounds
from world_models.base import SequenceBatch
from world_models.kalman import LGParams
from world_models.linear_gaussian import LinearGaussianSSM
from world_models.networks import obs_encoder
from world_models.nonlinear_ssm import NonlinearSSM
from world_models.posteriors import POSTERIORS, RefineSettings, make_posterior


def test_unknown_posterior_lists_valid_names():
    with pytest.raises(ValueError, match="unknown posterior 'iterative'; valid choices: " + ", ".join(POSTERIORS)):
        make_posterior("iterative", NonlinearSSM(1, 1))
    assert "iterative_amortized" in POSTERIORS


@pytest.mark.parametrize("steps", [-1, 2.5])
def test_negative_or_fractional_refinement_steps(steps):
    with pytest.raises(ValueError, match="steps K must be an integer >= 0"):
        RefineSettings(steps=steps)


def test_bad_optimizer_variant_and_init():
    with pytest.raises(ValueError, match="valid choices: adam, sgd"):
        RefineSettings(optimizer="lbfgs")
    with pytest.raises(ValueError, match="valid choices: detached, unrolled"):
        make_posterior("semi_amortized", NonlinearSSM(1, 1), variant="both")
    with pytest.raises(ValueError, match="valid choices: standard_normal, prior"):
        make_posterior("per_sequence", NonlinearSSM(1, 1), init="zeros")


def test_mismatched_dimensions():
    model = NonlinearSSM(2, 3, 1)
    q = make_posterior("amortized", model)
    wrong_obs = SequenceBatch(torch.zeros(2, 4, 5), torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match=r"expects observations of shape \(3,\).*got \(5,\)"):
        bounds.elbo(model, q, wrong_obs)
    wrong_act = SequenceBatch(torch.zeros(2, 4, 3), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="expects actions of size 1, got 2"):
        q.training_loss(model, wrong_act, None)
    with pytest.raises(ValueError, match=r"actions have batch/time shape \(2, 3\) but obs have \(2, 4\)"):
        SequenceBatch(torch.zeros(2, 4, 3), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"LGSSM parameter C must have shape \(3, 2\)"):
        p = random_lgssm(0, 2, 2).params()
        LinearGaussianSSM(2, 3, 1, LGParams(*p))
    with pytest.raises(ValueError, match="observations must be vectors"):
        obs_encoder((3, 32, 32), 8, 8)


def test_exact_needs_linear_model_and_task_names():
    with pytest.raises(TypeError, match="needs a linear-Gaussian model.*elbo, iwae, smc"):
        bounds.exact_log_marginal(NonlinearSSM(1, 1), SequenceBatch(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1)))
    with pytest.raises(ValueError, match="unknown toy task 'sine'.*synthetic9"):
        make_task("sine")


def test_experiment_cli_rejects_bad_values(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--task", "nope"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parse_args(["--refine-steps", "-1"])
    assert e.value.code == 2 and "must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parse_args(["--posteriors", "amortized", "magic"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        parse_args(["--workers", "0"])
    assert e.value.code == 2 and "--workers must be >= 1, got 0" in capsys.readouterr().err


def test_agent_config_rejects_bad_task_variant_settings_up_front():
    """Checked when the config is built (before a sweep launches anything), with the env's own messages."""
    from agent.config import AgentConfig
    for bad, name in (({"missing_prob": 1.5}, "--missing-prob"), ({"missing_every": 0}, "--missing-every"),
                      ({"obs_noise": -1.0}, "--obs-noise"), ({"action_repeat": 0}, "--action-repeat")):
        with pytest.raises(ValueError, match=name):
            AgentConfig(**bad)


def test_a_preset_the_chosen_planner_lacks_is_an_error_naming_its_presets():
    from agent.config import AgentConfig
    assert AgentConfig(planner="icem", planner_preset="small").planner_preset == "small"
    with pytest.raises(ValueError, match="--planner cem has no preset 'small'; its presets: planet, cpu"):
        AgentConfig(planner="cem", planner_preset="small")
