# Two entry points (README quick start):
#   make demo   record demos in MuJoCo -> train -> closed-loop evaluation -> benchmarks/results/demo.json
#   make test   colcon build + colcon test for all packages; non-zero exit on any failure
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
COLCON := $(VENV)/bin/colcon
# 2-core reference machine: one torch thread per process (see shared notes on throughput).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup system-deps build test demo clean

# Offscreen OpenGL for MuJoCo (EGL via Mesa; works without a display or GPU).
system-deps:
	@if ! ldconfig -p | grep -q 'libEGL.so.1' || ! ldconfig -p | grep -q 'libEGL_mesa'; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 >/dev/null; \
	  else echo 'need EGL (Debian/Ubuntu: sudo apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)'; exit 1; fi; \
	fi

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

setup: system-deps $(VENV)/.installed

build: setup
	$(COLCON) build --base-paths src --symlink-install --event-handlers console_direct- >/dev/null

test: build
	set -o pipefail; $(COLCON) test --base-paths src --event-handlers console_direct+ \
	  --pytest-args -q -p no:cacheprovider
	$(COLCON) test-result --verbose --all | tail -n 20
	$(COLCON) test-result

demo: build
	source install/setup.bash && install/vla_training/lib/vla_training/demo $(DEMO_ARGS)

clean:
	rm -rf build install log outputs
