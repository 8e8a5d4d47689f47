"""policy_node's ROS-free core: instruction selection across sources, checkpoint resolution."""
import pytest

from vla_policy.node_core import (DEFAULT_CHECKPOINT, LATCHED_TOPIC, PARAMETER, VOLATILE_TOPIC,
                                  InstructionSelector, resolve_checkpoint)


def test_latest_instruction_from_any_source_wins_and_repeats_are_not_changes():
    sel = InstructionSelector()
    first = sel.offer('reach the red cube', LATCHED_TOPIC, 0.0)       # latched value at start-up
    assert (first.text, first.source, first.previous) == ('reach the red cube', LATCHED_TOPIC, None)
    ch = sel.offer('  reach the green cube ', VOLATILE_TOPIC, 5.0)    # ros2 topic pub --once
    assert (ch.text, ch.source, ch.previous) == ('reach the green cube', VOLATILE_TOPIC, 'reach the red cube')
    assert sel.offer('reach the green cube', VOLATILE_TOPIC, 9.0) is None   # same text again: no edge
    ch = sel.offer('pick up the blue cube', PARAMETER, 10.0)          # ros2 param set
    assert (ch.text, ch.source) == ('pick up the blue cube', PARAMETER)
    assert sel.current == 'pick up the blue cube' and sel.source == PARAMETER
    ch = sel.offer('reach the red cube', VOLATILE_TOPIC, 11.0)
    assert ch.text == 'reach the red cube' and sel.current == 'reach the red cube'


def test_a_live_latched_message_seen_by_both_subscriptions_is_one_change():
    sel = InstructionSelector(pair_window_s=1.0)
    assert sel.offer('reach the red cube', VOLATILE_TOPIC, 1.00) is not None
    # The parameter changes between the two deliveries of the same latched publication: the
    # late second delivery must not undo it.
    assert sel.offer('reach the blue cube', PARAMETER, 1.01) is not None
    assert sel.offer('reach the red cube', LATCHED_TOPIC, 1.02) is None
    assert sel.current == 'reach the blue cube'
    # Either order of arrival pairs.
    assert sel.offer('pick up the red cube', LATCHED_TOPIC, 2.0) is not None
    assert sel.offer('reach the blue cube', PARAMETER, 2.1) is not None
    assert sel.offer('pick up the red cube', VOLATILE_TOPIC, 2.2) is None
    assert sel.current == 'reach the blue cube'


def test_a_delivery_on_one_subscription_only_is_not_paired_outside_the_window():
    sel = InstructionSelector(pair_window_s=1.0)
    assert sel.offer('reach the red cube', VOLATILE_TOPIC, 0.0) is not None
    assert sel.offer('reach the blue cube', PARAMETER, 1.0) is not None
    # A latched publisher that starts later replays 'reach the red cube': a new publication.
    ch = sel.offer('reach the red cube', LATCHED_TOPIC, 30.0)
    assert ch is not None and ch.text == 'reach the red cube' and ch.previous == 'reach the blue cube'


@pytest.mark.parametrize('bad,match', [('', 'is empty'), ('   ', 'is empty'), (42, 'must be a string')])
def test_invalid_instructions_are_refused_naming_the_source(bad, match):
    sel = InstructionSelector()
    sel.offer('reach the red cube', PARAMETER, 0.0)
    with pytest.raises(ValueError, match=f'instruction from parameter {match}'):
        sel.offer(bad, PARAMETER, 1.0)
    assert sel.current == 'reach the red cube'
    with pytest.raises(ValueError, match='unknown instruction source'):
        sel.offer('x', 'service', 1.0)


def test_resolve_checkpoint(tmp_path):
    ck = tmp_path / 'outputs' / 'demo' / 'film_cnn' / 'checkpoint'
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint(DEFAULT_CHECKPOINT, cwd=tmp_path)
    msg = str(err.value)
    assert msg == f"checkpoint '{ck}' not found: run `make demo` or pass checkpoint:=<dir>"
    assert '\n' not in msg
    ck.mkdir(parents=True)
    assert resolve_checkpoint(DEFAULT_CHECKPOINT, cwd=tmp_path) == ck
    assert resolve_checkpoint(str(ck)) == ck
    with pytest.raises(ValueError, match='parameter checkpoint is empty'):
        resolve_checkpoint('  ')


# ---------------------------------------------------------------- parameters <-> RuntimeConfig
import dataclasses  # noqa: E402
import pathlib  # noqa: E402

import yaml  # noqa: E402

from vla_policy.node_core import MODEL_FIELDS, NODE_PARAMETERS, parameter_defaults, runtime_config  # noqa: E402
from vla_policy.runtime import RuntimeConfig  # noqa: E402

META = {'n_obs_steps': 2, 'n_action_steps': 8, 'camera_names': ['wrist', 'front']}
CONFIG = pathlib.Path(__file__).resolve().parents[1] / 'config' / 'franka.yaml'


def test_every_runtime_config_field_is_a_parameter_with_the_dataclass_default():
    params = parameter_defaults()
    for f in dataclasses.fields(RuntimeConfig):
        assert f.name in params
        assert params[f.name] == (0 if f.name == 'n_action_steps' else f.default), f.name
    assert set(NODE_PARAMETERS) <= set(params)
    # every key of franka.yaml's policy_node section is a parameter the node declares (a typo
    # there would be ignored silently by rclpy)
    section = yaml.safe_load(CONFIG.read_text(encoding='utf-8'))['policy_node']['ros__parameters']
    assert set(section) <= set(params), set(section) - set(params)


def test_runtime_config_takes_the_model_fields_and_maps_the_rest_one_to_one():
    cfg = runtime_config({'max_obs_age_s': 1, 'handover': 'aggregate', 'inference': 'thread',
                          'chunk_size_threshold': 0.25}, META)
    assert (cfg.n_obs_steps, cfg.camera, cfg.n_action_steps) == (2, 'wrist', 8)
    assert cfg.max_obs_age_s == 1.0 and isinstance(cfg.max_obs_age_s, float)
    assert (cfg.handover, cfg.inference, cfg.chunk_size_threshold) == ('aggregate', 'thread', 0.25)
    assert runtime_config({'n_action_steps': 3, 'camera': 'wrist'}, META).n_action_steps == 3
    for name in MODEL_FIELDS:
        bad = {'n_obs_steps': 5, 'camera': 'left'}[name]
        with pytest.raises(ValueError, match=f'parameter {name} is .* but the model uses'):
            runtime_config({name: bad}, META)
    with pytest.raises(ValueError, match='handover must be one of'):
        runtime_config({'handover': 'smooth'}, META)
    with pytest.raises(TypeError, match='RuntimeConfig.inference must be str'):
        runtime_config({'inference': 3}, META)
    with pytest.raises(ValueError, match='model metadata lacks'):
        runtime_config({}, {'n_obs_steps': 1})
