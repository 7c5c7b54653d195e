# The README's two commands: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint typecheck examples clean proto bench bench-torchserve lock

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard src/servekit/_speedups/*.c src/servekit/_speedups/*.h)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints.txt: the versions the tests last passed with; pip's resolver alone
	# backtracks for a quarter of an hour over the extras' bounds
	$(BIN)/pip install -q -c constraints.txt -e '.[all,dev]'
	# tests call TF Serving's gRPC API with its official client; without --no-deps it
	# would add the full `tensorflow` package next to tensorflow-cpu
	$(BIN)/pip install -q --no-deps 'tensorflow-serving-api>=2.21,<3'
	touch $(STAMP)

install: $(STAMP)

# after changing a dependency: install it into .venv, run the tests, then pin what passed
lock: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze | grep -v '^-e\|^servekit\|^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

examples: $(STAMP)
	$(BIN)/python examples/train.py examples/models

serve: examples
	$(BIN)/servekit serve examples/models

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest -q tests

# V2 gRPC code from its .proto. The generated module gets its own descriptor
# pool: tritonclient defines the same `inference` messages in the default pool,
# and both must be importable in one process.
GRPC_PROTO := src/servekit/protocols/proto/grpc_predict_v2.proto
GRPC_GEN := src/servekit/protocols/generated
# TF Serving's gRPC API: its messages share one private pool (generated/tfserving/__init__.py),
# apart from the tensorflow.* messages TensorFlow registers in the default pool
TF_PROTO := src/servekit/protocols/proto/tfserving
proto:
	$(BIN)/python -m grpc_tools.protoc -Iservekit/protocols/generated=$(dir $(GRPC_PROTO)) \
		--python_out=src --pyi_out=src --grpc_python_out=src $(GRPC_PROTO)
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
		$(GRPC_GEN)/grpc_predict_v2_pb2.py
	touch $(GRPC_GEN)/__init__.py
	$(BIN)/python -m grpc_tools.protoc -Iservekit/protocols/generated/tfserving=$(TF_PROTO) \
		--python_out=src --pyi_out=src --grpc_python_out=src $(TF_PROTO)/*.proto
	rm -f $(GRPC_GEN)/tfserving/tensorflow_pb2_grpc.py $(GRPC_GEN)/tfserving/tensorflow_error_pb2_grpc.py
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/from servekit.protocols.generated.tfserving import POOL\nDESCRIPTOR = POOL.AddSerializedFile(/' \
		$(GRPC_GEN)/tfserving/*_pb2.py

clean:
	rm -rf $(VENV) build *.egg-info

# servekit vs MLServer side by side (about 15 min; BENCH_ARGS=--quick for a smoke run)
bench: $(STAMP)
	benchmarks/run.sh $(BENCH_ARGS)

# servekit vs TorchServe 0.12 on the article's CNN archive (about 3 min; needs Java 17;
# BENCH_ARGS=--quick for a smoke run)
bench-torchserve: $(STAMP)
	benchmarks/torchserve/run.sh $(BENCH_ARGS)

# Soak run (about 4 min; not part of `make test`): a 2-worker server under mixed load over
# every protocol, live model changes and worker kills, then a kill -9 of its supervisor;
# see benchmarks/soak/README.md. SOAK_ARGS="--seconds 600" runs longer.
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python benchmarks/soak/soak.py $(SOAK_ARGS)

# The fuzz tests of `make test` with many more examples: hypothesis-made bodies for
# every decoder in process, for every REST and gRPC surface of a real server, and
# schemathesis cases from the Open Inference Protocol's OpenAPI document
# (FUZZ_EXAMPLES per test; about 5 min at 5000 on two cores)
FUZZ_EXAMPLES ?= 5000
.PHONY: fuzz
fuzz: $(STAMP)
	SERVEKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz_codecs.py tests/test_fuzz_e2e.py tests/test_schemathesis_v2.py

# The peers' own test suites and clients against servekit (conformance/*/run), one
# table in benchmarks/results/conformance.md; not part of `make test`
.PHONY: conformance
conformance: $(STAMP)
	$(BIN)/python conformance/run.py $(SUITES)
