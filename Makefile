# The two commands a new user runs: `make demo` (set-up + cascomp compress on real data) and `make test`.
PYTHON ?= python3
OUT ?= out
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo demo-run test test-all coverage benchmark

# torch first (the CPU wheel), then the project; Fashion-MNIST from Debian's package where apt-get can run.
setup:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'
	@[ -d $(FMNIST) ] || (command -v apt-get >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) \
		|| echo "note: Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist needs root); the demo uses scikit-learn's digits"

demo: setup
	$(MAKE) --no-print-directory demo-run

# Train a small ResNet-style baseline for 2 epochs, then compress it to a third of its FLOPs (the default method, 3 epochs).
demo-run:
	$(eval DATA := $(shell [ -d $(FMNIST) ] && echo fashion-mnist:$(FMNIST) || echo digits:))
	mkdir -p $(OUT)
	cascomp demo-model -o $(OUT)/demo.pt --force --train $(DATA) --epochs 2 --limit-train 10000 --limit-val 2000
	cascomp compress $(OUT)/demo.pt --target flops=0.33 --data $(DATA) \
		--limit-train 10000 --limit-val 2000 --epochs 3 -o $(OUT)/compress --force

test: setup
	$(PYTHON) -m pytest -q

# also the tests marked slow (training-heavy), which the default run leaves out
test-all: setup
	$(PYTHON) -m pytest -q -m 'slow or not slow'

coverage: setup
	$(PYTHON) benchmarks/coverage.py

benchmark: setup
	$(PYTHON) benchmarks/fashion_mnist.py
