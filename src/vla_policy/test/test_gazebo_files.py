"""Gazebo Sim files (config/gazebo/, launch/franka_gazebo.launch.py) checked without Gazebo.

- The world SDF is SDF 1.9 and passes sdformat's own checker (``ign sdf -k``, Debian's
  ignition-tools + libsdformat-dev; skipped where ``ign`` is absent), and the checker fails on a
  broken copy, naming the element and line.
- Camera, table and cubes in the world equal the MuJoCo scene's (robot_drivers.sim.franka_cubes),
  recomputed here from the compiled MuJoCo model; the camera is also checked end to end: the
  cubes projected through the SDF camera (Gazebo's pinhole model and axes) land where MuJoCo
  renders them.
- ros_gz_bridge YAML, controllers YAML and the robot xacro agree with config/franka.yaml, the
  franka_panda embodiment and each other; setup.py installs them all.
- The launch file compiles, forwards only arguments franka.launch.py declares, its joint renaming
  works on a franka_description-style URDF, and (with launch_ros) generates a description.
"""
import ast
import math
import pathlib
import py_compile
import re
import shutil
import subprocess
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from robot_drivers.embodiment import FRANKA_PANDA

ROOT = pathlib.Path(__file__).resolve().parents[3]
GZ = ROOT / 'config' / 'gazebo'
WORLD = GZ / 'franka_cubes.sdf'
BRIDGE = GZ / 'bridge.yaml'
CONTROLLERS = GZ / 'controllers.yaml'
XACRO = GZ / 'franka_gazebo.urdf.xacro'
LAUNCH = ROOT / 'launch' / 'franka_gazebo.launch.py'
FRANKA_LAUNCH = ROOT / 'launch' / 'franka.launch.py'
FRANKA_YAML = ROOT / 'config' / 'franka.yaml'
SETUP = ROOT / 'src' / 'vla_policy' / 'setup.py'


# ----------------------------------------------------------------------------- helpers
def _world():
    return ET.parse(WORLD).getroot().find('world')


def _model(name):
    for m in _world().findall('model'):
        if m.get('name') == name:
            return m
    raise AssertionError(f'{WORLD.name}: no model named {name!r}')


def _floats(text):
    return np.array([float(v) for v in text.split()])


def _rpy_to_matrix(roll, pitch, yaw):
    """SDF pose rotation: R = Rz(yaw) Ry(pitch) Rx(roll) (extrinsic x-y-z)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def _franka_params():
    return yaml.safe_load(FRANKA_YAML.read_text())


def _sdf_checker():
    """``ign`` (Debian's ignition-tools + libsdformat-dev, sdformat 12) or ``gz`` (Gazebo Harmonic)."""
    for tool in ('ign', 'gz'):
        if shutil.which(tool) is None:
            continue
        probe = subprocess.run([tool, 'sdf', '--versions'], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip():
            return tool
    pytest.skip('no `ign sdf` / `gz sdf`: apt-get install ignition-tools libsdformat-dev (sdformat checker)')


def _ign_sdf_check(path):
    """``ign sdf -k path``: sdformat's checker of SDF worlds and URDFs (names the bad element and line)."""
    return subprocess.run([_sdf_checker(), 'sdf', '-k', str(path)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope='module')
def sim():
    pytest.importorskip('mujoco', reason='MuJoCo (requirements.txt) builds the reference scene')
    from robot_drivers.sim.franka_cubes import FrankaCubeSim
    s = FrankaCubeSim()
    s.reset(seed=int(_franka_params()['sim_node']['ros__parameters']['seed']))
    yield s
    s.close()


# ----------------------------------------------------------------------------- SDF validity
def test_world_is_sdf_1_9():
    root = ET.parse(WORLD).getroot()
    assert root.tag == 'sdf' and root.get('version') == '1.9'
    assert _world().get('name') == 'franka_cubes'
    plugins = {p.get('name') for p in _world().findall('plugin')}
    # physics, the create service (UserCommands) and the camera (Sensors) must be loaded
    assert {'gz::sim::systems::Physics', 'gz::sim::systems::UserCommands',
            'gz::sim::systems::SceneBroadcaster', 'gz::sim::systems::Sensors'} <= plugins


def test_ign_sdf_check_passes_on_world():
    proc = _ign_sdf_check(WORLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Valid' in proc.stdout


def test_ign_sdf_check_fails_on_broken_world(tmp_path):
    text = WORLD.read_text()
    pose = _model('front_camera').find('pose').text
    assert text.count(f'<pose>{pose}</pose>') == 1
    broken = tmp_path / 'broken.sdf'
    broken.write_text(text.replace(f'<pose>{pose}</pose>', f'<pose>{pose.rsplit(" ", 1)[0]}</pose>'))
    proc = _ign_sdf_check(broken)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'Valid' not in proc.stdout, out
    line = 1 + text[:text.index(f'<pose>{pose}</pose>')].count('\n')
    assert 'front_camera' in out and '<pose>' in out and f'L{line}' in out, out


def test_ign_sdf_check_fails_on_duplicate_model(tmp_path):
    broken = tmp_path / 'dup.sdf'
    broken.write_text(WORLD.read_text().replace('<model name="cube_green">', '<model name="cube_red">'))
    proc = _ign_sdf_check(broken)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert 'cube_red' in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- scene == MuJoCo scene
def _sdf_camera():
    model = _model('front_camera')
    sensor = model.find('link/sensor')
    cam = sensor.find('camera')
    pose = _floats(model.find('pose').text)
    return {
        'pos': pose[:3], 'R': _rpy_to_matrix(*pose[3:]),
        'hfov': float(cam.find('horizontal_fov').text),
        'width': int(cam.find('image/width').text), 'height': int(cam.find('image/height').text),
        'format': cam.find('image/format').text,
        'near': float(cam.find('clip/near').text), 'far': float(cam.find('clip/far').text),
        'rate': float(sensor.find('update_rate').text), 'topic': sensor.find('topic').text,
        'type': sensor.get('type'),
    }


def test_camera_pose_and_intrinsics_equal_mujoco(sim):
    m, d = sim.model, sim.data
    cid = m.camera('front').id
    r_mj = d.cam_xmat[cid].reshape(3, 3)  # columns: MuJoCo camera x (right), y (up), z (backwards)
    # Gazebo camera: looks along +x, +y left, +z up -> x_gz = -z_mj, y_gz = -x_mj, z_gz = y_mj
    r_expected = np.column_stack([-r_mj[:, 2], -r_mj[:, 0], r_mj[:, 1]])
    cam = _sdf_camera()
    assert cam['type'] == 'camera'
    np.testing.assert_allclose(cam['pos'], d.cam_xpos[cid], atol=1e-6)
    np.testing.assert_allclose(cam['R'], r_expected, atol=2e-6)
    size = sim.cfg.image_size
    assert (cam['width'], cam['height']) == (size, size)
    assert size == int(_franka_params()['sim_node']['ros__parameters']['image_size'])
    assert cam['format'] == 'R8G8B8'
    # focal lengths in px: Gazebo from the horizontal fov and width, MuJoCo from fovy and height
    fx_gz = (cam['width'] / 2) / math.tan(cam['hfov'] / 2)
    fy_mj = (size / 2) / math.tan(math.radians(m.cam_fovy[cid]) / 2)
    assert fx_gz == pytest.approx(fy_mj, rel=1e-5)
    assert cam['near'] == pytest.approx(m.vis.map.znear * m.stat.extent, rel=1e-4)
    assert cam['far'] == pytest.approx(m.vis.map.zfar * m.stat.extent, rel=1e-4)
    assert cam['rate'] == float(_franka_params()['sim_node']['ros__parameters']['camera_rate_hz'])


def _project_gazebo(cam, p):
    """Pixel (u right, v down) of world point p through the SDF camera (pinhole, looks along +x)."""
    c = cam['R'].T @ (np.asarray(p) - cam['pos'])
    f = (cam['width'] / 2) / math.tan(cam['hfov'] / 2)
    return np.array([cam['width'] / 2 - f * c[1] / c[0], cam['height'] / 2 - f * c[2] / c[0]])


def test_sdf_camera_sees_the_cubes_where_mujoco_renders_them(sim):
    try:
        img = sim.render()
    except Exception as exc:  # no EGL/OSMesa context on this machine
        pytest.skip(f'MuJoCo offscreen rendering unavailable: {exc}')
    cam = _sdf_camera()
    rgb = img.astype(int)
    masks = {'red': (rgb[..., 0] > 110) & (rgb[..., 1] < 70) & (rgb[..., 2] < 70),
             'green': (rgb[..., 1] > 90) & (rgb[..., 0] < 70) & (rgb[..., 2] < 90),
             'blue': (rgb[..., 2] > 110) & (rgb[..., 0] < 70) & (rgb[..., 1] < 110)}
    for colour, centre in sim.cube_positions().items():
        ys, xs = np.nonzero(masks[colour])
        assert xs.size >= 10, f'{colour} cube not visible in the MuJoCo render'
        seen = np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centres
        np.testing.assert_allclose(_project_gazebo(cam, centre), seen, atol=1.0,
                                   err_msg=f'{colour} cube: SDF camera projection vs MuJoCo render')


def test_cubes_equal_mujoco_default_seed(sim):
    from robot_drivers.sim.franka_cubes import CUBE_COLOURS
    m, d = sim.model, sim.data
    for colour, rgb in CUBE_COLOURS.items():
        model = _model(f'cube_{colour}')
        pose = _floats(model.find('pose').text)
        body = m.body(f'cube_{colour}').id
        np.testing.assert_allclose(pose[:3], d.xpos[body], atol=2e-6, err_msg=colour)
        q = d.xquat[body]
        np.testing.assert_allclose(pose[3:], [0.0, 0.0, 2 * math.atan2(q[3], q[0])], atol=2e-6, err_msg=colour)
        geom = m.geom(f'cube_{colour}')
        for part in ('collision', 'visual'):
            np.testing.assert_allclose(_floats(model.find(f'link/{part}/geometry/box/size').text),
                                       2 * m.geom_size[geom.id], atol=1e-9)
        assert float(model.find('link/inertial/mass').text) == pytest.approx(m.body_mass[body])
        np.testing.assert_allclose([float(model.find(f'link/inertial/inertia/i{a}').text) for a in 'xx yy zz'.split()],
                                   m.body_inertia[body], rtol=1e-4)
        assert float(model.find('link/collision/surface/friction/ode/mu').text) == m.geom_friction[geom.id][0]
        np.testing.assert_allclose(_floats(model.find('link/visual/material/diffuse').text)[:3], rgb)


def test_table_and_floor_equal_mujoco(sim):
    m = sim.model
    table = m.geom('table').id
    model = _model('table')
    np.testing.assert_allclose(_floats(model.find('pose').text)[:3], m.geom_pos[table])
    np.testing.assert_allclose(_floats(model.find('link/collision/geometry/box/size').text), 2 * m.geom_size[table])
    top = m.geom_pos[table][2] + m.geom_size[table][2]
    assert top == pytest.approx(0.0)  # the robot base plane, where franka_description's link0 is fixed
    floor = _floats(_model('ground_plane').find('pose').text)
    assert floor[2] == pytest.approx(m.geom_pos[m.geom('floor').id][2])


# ----------------------------------------------------------------------------- bridge + controllers
def test_bridge_yaml_has_clock_and_camera_from_gazebo():
    entries = yaml.safe_load(BRIDGE.read_text())
    assert isinstance(entries, list)
    by_ros = {e['ros_topic_name']: e for e in entries}
    assert len(by_ros) == len(entries), 'duplicate ROS topics in bridge.yaml'
    clock = by_ros['/clock']
    assert (clock['ros_type_name'], clock['gz_type_name'], clock['direction'], clock['gz_topic_name']) == (
        'rosgraph_msgs/msg/Clock', 'gz.msgs.Clock', 'GZ_TO_ROS', '/clock')
    image_topic = _franka_params()['policy_node']['ros__parameters']['image_topic']
    image = by_ros[image_topic]
    assert (image['ros_type_name'], image['gz_type_name'], image['direction']) == (
        'sensor_msgs/msg/Image', 'gz.msgs.Image', 'GZ_TO_ROS')
    sensor_topic = _sdf_camera()['topic']
    assert image['gz_topic_name'] == sensor_topic
    info = by_ros['/camera/camera_info']
    # gz-sensors publishes CameraInfo at <image topic without its last part>/camera_info
    assert info['gz_topic_name'] == sensor_topic.rsplit('/', 1)[0] + '/camera_info'
    assert (info['ros_type_name'], info['gz_type_name'], info['direction']) == (
        'sensor_msgs/msg/CameraInfo', 'gz.msgs.CameraInfo', 'GZ_TO_ROS')
    for e in entries:
        assert e['direction'] in ('GZ_TO_ROS', 'ROS_TO_GZ', 'BIDIRECTIONAL')


def test_controllers_yaml_drives_the_embodiment_joints():
    cfg = yaml.safe_load(CONTROLLERS.read_text())
    cm = cfg['controller_manager']['ros__parameters']
    assert cm['joint_state_broadcaster']['type'] == 'joint_state_broadcaster/JointStateBroadcaster'
    arm = cfg['arm_controller']['ros__parameters']
    assert arm['type'] == 'joint_trajectory_controller/JointTrajectoryController'
    # the arm driver sends every embodiment joint in each message, finger included
    assert arm['joints'] == FRANKA_PANDA.joint_names
    assert arm['command_interfaces'] == ['position']
    assert set(arm['state_interfaces']) == {'position', 'velocity'}
    out = _franka_params()['arm_driver_node']['ros__parameters']['output_topic']
    assert out == '/arm_controller/joint_trajectory' == FRANKA_PANDA.command_topic
    step = float(_world().find('physics/max_step_size').text)
    assert cm['update_rate'] * step <= 1.0 + 1e-9  # at most one controller update per physics step


def _xacro_joints():
    root = ET.parse(XACRO).getroot()
    r2c = root.find('ros2_control')
    return root, r2c, {j.get('name'): j for j in r2c.findall('joint')}


def test_xacro_ros2_control_matches_controllers_and_ready_pose():
    from robot_drivers.sim.franka_cubes import READY_POSE
    root, r2c, joints = _xacro_joints()
    assert r2c.find('hardware/plugin').text == 'gz_ros2_control/GazeboSimSystem'
    prefix = '$(arg robot_type)_'
    arm = [f'{prefix}joint{i}' for i in range(1, 8)] + [f'{prefix}finger_joint1']
    assert list(joints) == arm + [f'{prefix}finger_joint2']
    for name, q in zip(arm + [f'{prefix}finger_joint2'], list(READY_POSE) + [READY_POSE[7]]):
        j = joints[name]
        init = j.find("state_interface[@name='position']/param[@name='initial_value']")
        assert float(init.text) == pytest.approx(q, abs=1e-12), name
        assert {s.get('name') for s in j.findall('state_interface')} == {'position', 'velocity', 'effort'}
        cmds = [c.get('name') for c in j.findall('command_interface')]
        assert cmds == ([] if name.endswith('finger_joint2') else ['position']), name  # joint2 mimics joint1
    plugin = root.find('gazebo/plugin')
    assert (plugin.get('filename'), plugin.get('name')) == (
        'gz_ros2_control-system', 'gz_ros2_control::GazeboSimROS2ControlPlugin')
    assert plugin.find('parameters').text == '$(arg controllers)'
    args = {a.get('name'): a.get('default') for a in root.findall('{http://www.ros.org/wiki/xacro}arg')}
    assert args['controllers'] == '$(find vla_policy)/config/gazebo/controllers.yaml'
    assert args['robot_type'] == 'fr3'
    include = root.find('{http://www.ros.org/wiki/xacro}include').get('filename')
    assert include == '$(find franka_description)/robots/$(arg robot_type)/$(arg robot_type).urdf.xacro'


# ----------------------------------------------------------------------------- launch file
def _launch_function(name):
    """A module-level function of the launch file, compiled alone (no launch/launch_ros needed)."""
    tree = ast.parse(LAUNCH.read_text())
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name == name)
            or (isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ('PANDA_JOINTS', 'ROBOT_TYPES')
                                                 for t in n.targets))]
    mod = types.ModuleType('franka_gazebo_launch_part')
    mod.__dict__.update(re=re, ET=ET)
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(LAUNCH), 'exec'), mod.__dict__)
    return getattr(mod, name), mod


def _franka_style_urdf(prefix):
    """A URDF shaped like franka_description + this xacro's output (names only, no geometry)."""
    links = ''.join(f'<link name="{prefix}_link{i}"/>' for i in range(9))
    joints = ''.join(
        f'<joint name="{prefix}_joint{i}" type="revolute"><parent link="{prefix}_link{i - 1}"/>'
        f'<child link="{prefix}_link{i}"/></joint>' for i in range(1, 8))
    joints += f'<joint name="{prefix}_joint8" type="fixed"><parent link="{prefix}_link7"/><child link="{prefix}_link8"/></joint>'
    hand = (f'<link name="{prefix}_leftfinger"/><link name="{prefix}_rightfinger"/>'
            f'<joint name="{prefix}_finger_joint1" type="prismatic"><parent link="{prefix}_link8"/>'
            f'<child link="{prefix}_leftfinger"/></joint>'
            f'<joint name="{prefix}_finger_joint2" type="prismatic"><parent link="{prefix}_link8"/>'
            f'<child link="{prefix}_rightfinger"/><mimic joint="{prefix}_finger_joint1"/></joint>')
    extra = (f'<gazebo reference="{prefix}_joint1"><provideFeedback>true</provideFeedback></gazebo>'
             f'<transmission name="{prefix}_joint1_transmission"><joint name="{prefix}_joint1"/></transmission>'
             f'<ros2_control name="GazeboSimSystem" type="system"><joint name="{prefix}_joint1"/>'
             f'<joint name="{prefix}_finger_joint2"/></ros2_control>')
    return f'<robot name="{prefix}">{links}<link name="world"/>{joints}{hand}{extra}</robot>'


def test_joint_renaming_gives_embodiment_names():
    rename, mod = _launch_function('embodiment_joint_names')
    assert list(mod.PANDA_JOINTS[:8]) == FRANKA_PANDA.joint_names
    root = ET.fromstring(rename(_franka_style_urdf('fr3'), 'fr3'))
    joints = [j.get('name') for j in root.findall('joint')]
    assert joints == [f'panda_joint{i}' for i in range(1, 8)] + ['fr3_joint8', 'panda_finger_joint1',
                                                                 'panda_finger_joint2']
    assert root.find("joint[@name='panda_finger_joint2']/mimic").get('joint') == 'panda_finger_joint1'
    assert root.find('gazebo').get('reference') == 'panda_joint1'
    assert root.find('transmission').get('name') == 'fr3_joint1_transmission'
    assert root.find('transmission/joint').get('name') == 'panda_joint1'
    assert [j.get('name') for j in root.findall('ros2_control/joint')] == ['panda_joint1', 'panda_finger_joint2']
    assert {ln.get('name') for ln in root.findall('link')} >= {'fr3_link0', 'fr3_leftfinger', 'world'}


def test_joint_renaming_rejects_mismatched_robot_type():
    rename, _ = _launch_function('embodiment_joint_names')
    with pytest.raises(ValueError, match=r"panda_joint1.*fer_joint1"):
        rename(_franka_style_urdf('fer'), 'fr3')
    with pytest.raises(ValueError, match='robot_type'):
        rename(_franka_style_urdf('fr3'), 'panda')


def test_launch_file_compiles_and_forwards_only_declared_arguments():
    py_compile.compile(str(LAUNCH), doraise=True, cfile=None)

    def declared(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'DeclareLaunchArgument':
                names.add(ast.literal_eval(node.args[0]))
        return names

    forwarded = None
    for node in ast.walk(ast.parse(LAUNCH.read_text())):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == 'sim' for k in node.keys):
            forwarded = {k.value: v for k, v in zip(node.keys, node.values)}
    assert forwarded is not None, 'franka_gazebo.launch.py does not include franka.launch.py'
    assert ast.literal_eval(forwarded['sim']) == 'false' and ast.literal_eval(forwarded['use_sim_time']) == 'true'
    missing = set(forwarded) - declared(FRANKA_LAUNCH)
    assert not missing, f'franka.launch.py does not declare {sorted(missing)}'
    assert {'instruction', 'robot_type', 'world', 'controllers', 'bridge_config'} <= declared(LAUNCH)
    text = LAUNCH.read_text()
    for f in (WORLD, BRIDGE, CONTROLLERS, XACRO):
        assert f"'{f.name}'" in text, f'{f.name} not referenced by the launch file'


def test_setup_py_installs_gazebo_files(monkeypatch):
    import setuptools
    captured = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kw: captured.update(kw))
    monkeypatch.chdir(SETUP.parent)
    import runpy
    runpy.run_path(str(SETUP), run_name='__main__')
    data = dict(captured['data_files'])
    gz = data['share/vla_policy/config/gazebo']
    assert sorted(pathlib.Path(p).name for p in gz) == sorted(p.name for p in GZ.iterdir() if p.is_file())
    assert 'launch/franka_gazebo.launch.py' in data['share/vla_policy/launch']


def test_launch_generates_description():
    pytest.importorskip('launch_ros', reason='launch_ros (ROS 2) is not installed; runs on a ROS 2 machine')
    import importlib.util
    spec = importlib.util.spec_from_file_location('franka_gazebo_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from launch import LaunchDescription
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    names = {a.name for a in ld.get_launch_arguments()}
    assert {'instruction', 'robot_type', 'world', 'gz_args'} <= names


def test_xacro_renders_with_franka_description(tmp_path):
    """On a ROS machine with xacro + franka_description: the full robot_description path."""
    xacro = pytest.importorskip('xacro', reason='xacro (ROS 2) is not installed')
    packages = pytest.importorskip('ament_index_python.packages', reason='ament_index_python (ROS 2) missing')
    try:
        packages.get_package_share_directory('franka_description')
        packages.get_package_share_directory('vla_policy')
    except packages.PackageNotFoundError as exc:
        pytest.skip(f'package not installed: {exc}')
    rename, _ = _launch_function('embodiment_joint_names')
    doc = xacro.process_file(str(XACRO), mappings={'robot_type': 'fr3', 'gazebo': 'true', 'hand': 'true',
                                                   'ee_id': 'franka_hand', 'ros2_control': 'false',
                                                   'controllers': str(CONTROLLERS)})
    urdf = rename(doc.toxml(), 'fr3')
    root = ET.fromstring(urdf)
    movable = [j.get('name') for j in root.findall('joint') if j.get('type') != 'fixed']
    assert movable[:7] == FRANKA_PANDA.joint_names[:7]
    assert sorted(j.get('name') for j in root.findall('ros2_control/joint')) == sorted(
        FRANKA_PANDA.joint_names + ['panda_finger_joint2'])
    urdf_file = tmp_path / 'franka_gazebo.urdf'
    urdf_file.write_text(urdf)
    proc = _ign_sdf_check(urdf_file)
    assert proc.returncode == 0 and 'Valid' in proc.stdout, proc.stdout + proc.stderr
