# The two commands a new user runs: `make demo` (set-up + the main job on a demo model) and `make test`.
PYTHON ?= python3
OUT ?= out

.PHONY: setup demo test coverage

setup:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'

demo: setup
	mkdir -p $(OUT)
	cascomp demo-model -o $(OUT)/demo.pt --force
	cascomp analyze $(OUT)/demo.pt --input-shape 1,1,28,28
	$(PYTHON) -c "import torch, cascomp; m = torch.load('$(OUT)/demo.pt', weights_only=False); x = torch.randn(1, 1, 28, 28); g = cascomp.trace(m, x); p = cascomp.Plan.uniform(g, 0.5); small = cascomp.apply_plan(g, p); print('FLOPs ratio', round(g.cost(p).flops / g.cost().flops, 3), 'params ratio', round(g.cost(p).params / g.cost().params, 3)); torch.save(small, '$(OUT)/demo-half.pt')"
	cascomp export $(OUT)/demo-half.pt --input-shape 1,1,28,28 -o $(OUT)/demo-half.onnx --force
	cascomp profile $(OUT)/demo.pt --input-shape 1,1,28,28 --batch-sizes 1,32 --repeats 20
	cascomp profile $(OUT)/demo-half.onnx --batch-sizes 1,32 --repeats 20

test: setup
	$(PYTHON) -m pytest -q

coverage: setup
	$(PYTHON) benchmarks/coverage.py
