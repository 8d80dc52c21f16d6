# test/fuzz/fuzz.mk: included by the top-level Makefile. libFuzzer targets, one per parser
# that reads what others send (docs/architecture.md, "Fuzzing and sanitizers"):
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="http ws"]
# test/fuzz/run.sh builds them with clang into build/fuzz/ (make BUILD=build/fuzz with
# -fsanitize=fuzzer-no-link,address,undefined, llhttp included) and runs each for that long.

FUZZ_NAMES   := $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_LDFLAGS ?= -fsanitize=fuzzer,address,undefined

$(BUILD)/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itest/fuzz $(CFLAGS) $(FUZZ_LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

.PHONY: fuzz fuzz-build
fuzz-build: $(addprefix $(BUILD)/fuzz_,$(FUZZ_NAMES))

fuzz:
	@test/fuzz/run.sh
