# gmat — build, example, tests, benchmarks.
#   make install   build and install the `gmat` binary (cargo install)
#   make example   import + export example/tiny_llm into out/example, and the vision-language
#                  example/kimi2 (text GGUF + vision projector GGUF), and show what was made
#   make test      the test suite (what CI runs), with a short fuzzing pass (src/fuzz.rs); the S3
#                  store tests start and stop a local Garage node (skipped without garage)
#   make fuzz      a long fuzzing pass of every parser of outside bytes (GMAT_FUZZ_CASES cases
#                  per target, 20000 by default)
#   make lint      rustfmt check + clippy with warnings as errors
#   make bench     benchmarks against the reference llama.cpp (needs ../shared/reference/setup.sh):
#                  quantizer throughput per type (bench-quant), the store's size and speed per
#                  encoding (bench-store) and end to end (bench/run.sh)
#   make bench-s3  import to / export from a local single-node Garage vs local disk (bench/s3.sh;
#                  needs garage: make garage); also part of make bench
#   make garage    install garage (S3-compatible object store) for the S3 store tests and bench
#   make bench-quality  budget exports (--target-size) against llama-quantize's file types of the
#                  same size: llama-perplexity --kl-divergence on SmolLM2-135M and Gemma 3 270M (bench/quality.sh)
#   make parity    byte parity of every kit model against llama.cpp (needs setup.sh --full)
#   make parity-configs  config.json ablation against the converter (bench/parity_configs.py;
#                  ARGS="--subset" for the quicker run, ARGS="--models llama-tiny" for one model)

CARGO ?= cargo
GMAT := target/release/gmat
OUT := out/example

REF_ENV := $${GMAT_REF:-$$HOME/.cache/gmat-ref}/env.sh

.PHONY: build install example test fuzz lint bench bench-quant bench-store bench-s3 garage bench-quality quant-diff parity parity-configs clean

build:
	$(CARGO) build --release --locked

install:
	$(CARGO) install --path . --locked --force

example: build
	rm -rf $(OUT) && mkdir -p $(OUT)
	$(GMAT) import --model example/tiny_llm --generate-config $(OUT)/import_config.json
	$(GMAT) import --model example/tiny_llm --config $(OUT)/import_config.json -o $(OUT)
	$(GMAT) export --model $(OUT)/model.gmat --type Q8_0 --generate-config $(OUT)/export_config.json
	$(GMAT) export --model $(OUT)/model.gmat --config $(OUT)/export_config.json -o $(OUT)/tiny_llm-Q8_0.gguf
	$(GMAT) export --model $(OUT)/model.gmat --type BF16 -o $(OUT)/tiny_llm-BF16.gguf
	$(GMAT) export --model $(OUT)/model.gmat --type Q8_0 --dry-run | tail -n 4
	$(GMAT) import -q --model example/kimi2/hf -o $(OUT)/kimi2
	$(GMAT) export --model $(OUT)/kimi2 --type Q4_K_M -o $(OUT)/kimi2/kimi2-Q4_K_M.gguf
	@echo; echo "made:"; ls -la $(OUT) $(OUT)/model.gmat $(OUT)/kimi2 | sed 's/^/  /'

test:
	$(CARGO) test --locked

GMAT_FUZZ_CASES ?= 20000

fuzz:
	GMAT_FUZZ_CASES=$(GMAT_FUZZ_CASES) $(CARGO) test --locked --release --lib fuzz:: -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

bench: build bench-quant bench-store bench-s3
	bash bench/run.sh

bench-s3: build garage
	bash bench/s3.sh

# The tests of stores in buckets start and stop a single-node Garage themselves
# (tests/common/garage.rs) and skip without it.
garage:
	command -v garage >/dev/null 2>&1 || [ -x "$${CARGO_HOME:-$$HOME/.cargo}/bin/garage" ] || \
	  $(CARGO) install garage --locked --no-default-features --features bundled-libs,sqlite

bench-store: build
	$(CARGO) build --release --locked --example codec_bench
	. $(REF_ENV) && $$REF_PY bench/store_bench.py

bench-quality: build
	bash bench/quality.sh

bench-quant:
	bash bench/quant_bench.sh

quant-diff:
	bash bench/quant_bench.sh diff

parity: build
	bash bench/parity.sh

parity-configs: build
	. $(REF_ENV) && nice -n 10 $$REF_PY bench/parity_configs.py convert views gmat fixtures report $(ARGS)

clean:
	rm -rf out target
