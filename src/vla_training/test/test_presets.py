"""Model presets (config/models/*.yaml) overlaid on a robot's training YAML: `train --preset <name>`."""

from pathlib import Path

import pytest

from vla_training import train_cli

ROOT = Path(__file__).resolve().parents[3]
PRESETS = sorted(p.stem for p in (ROOT / 'config' / 'models').glob('*.yaml'))


def test_the_issue_presets_exist():
    assert {'film_cnn', 'rt2', 'octo', 'pi0', 'groot', 'robovlms'} <= set(PRESETS)
    assert train_cli.available_presets() == PRESETS


@pytest.mark.parametrize('preset', PRESETS)
@pytest.mark.parametrize('robot', ['train_franka.yaml', 'train_excavator.yaml'])
def test_preset_overlays_architecture_and_keeps_the_robot(preset, robot):
    base, base_train, base_data = train_cli.load_train_yaml(str(ROOT / 'config' / robot))
    model, train, data = train_cli.load_train_yaml(str(ROOT / 'config' / robot), preset)
    raw = train_cli.load_preset(preset)
    for key in ('embodiment', 'action_dim', 'state_dim', 'camera_names', 'delta_action_dims', 'binary_action_dims'):
        assert getattr(model, key) == getattr(base, key), key
    assert data == base_data
    for key, value in raw['model'].get('backbone', {}).items():
        assert getattr(model.backbone, key) == (tuple(value) if isinstance(value, list) else value), key
    for key, value in raw['model'].get('head', {}).items():
        assert getattr(model.head, key) == (tuple(value) if isinstance(value, list) else value), key
    assert model.structure == raw['model'].get('structure', 'one_step_continuous')
    for key, value in raw['train'].items():
        assert getattr(train, key) == value, key
    assert train.output_dir == base_train.output_dir      # not a preset's business


def test_preset_by_path_and_nested_merge(tmp_path):
    p = tmp_path / 'mine.yaml'
    p.write_text('model:\n  head:\n    hidden: 77\ntrain:\n  lr: 0.01\n')
    model, train, _ = train_cli.load_train_yaml(str(ROOT / 'config' / 'train_franka.yaml'), str(p))
    assert model.head.hidden == 77 and model.head.loss == 'l1' and model.head.name == 'mlp'   # merged key by key
    assert train.lr == 0.01 and train.steps == 3000


def test_bad_presets_are_named(tmp_path):
    cfg = str(ROOT / 'config' / 'train_franka.yaml')
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; available: \[.*'octo'.*\]"):
        train_cli.load_train_yaml(cfg, 'nope')
    robot = tmp_path / 'robot.yaml'
    robot.write_text('model:\n  action_dim: 3\n')
    with pytest.raises(ValueError, match=r"\['action_dim'\] describe the robot"):
        train_cli.load_train_yaml(cfg, str(robot))
    section = tmp_path / 'section.yaml'
    section.write_text('data:\n  rate_hz: 5\n')
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['data'\]"):
        train_cli.load_train_yaml(cfg, str(section))
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model:\n  backbone:\n    name: resnet9000\n')
    with pytest.raises(ValueError, match=r"with preset .*bad.yaml.*unknown backbone 'resnet9000'; available"):
        train_cli.load_train_yaml(cfg, str(bad))


def test_cli_bad_preset_is_one_line(capsys, tmp_path):
    rc = train_cli.main(['--bags', str(tmp_path), '--config', str(ROOT / 'config' / 'train_franka.yaml'),
                         '--preset', 'nope'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "unknown preset 'nope'" in err[0]


def test_action_dims_must_match_the_embodiment(tmp_path):
    cfg = tmp_path / 'robot.yaml'
    cfg.write_text((ROOT / 'config' / 'train_franka.yaml').read_text().replace('action_dim: 8 ', 'action_dim: 7 ')
                   .replace('binary_action_dims: [7]', 'binary_action_dims: []')
                   .replace('delta_action_dims: [0, 1, 2, 3, 4, 5, 6]', 'delta_action_dims: []')
                   .replace('robot_config: franka.yaml', f'robot_config: {ROOT / "config" / "franka.yaml"}'))
    with pytest.raises(ValueError, match=r"model.action_dim is 7 but embodiment 'franka_panda' has 8 action dims"):
        train_cli.load_train_yaml(str(cfg), 'film_cnn')
