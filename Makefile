# Parley build. `make` builds build/parleyd; `make run` and `make test` also
# install missing Debian packages and start a private Redis and PostgreSQL
# under ./var (see deploy/dev/). Third-party code comes from Debian packages
# only; llhttp's C sources are compiled from where node-llhttp installs them.

CC      ?= cc
BUILD   := build
LLHTTP_SRC ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -pthread $(WARN)
CPPFLAGS += -Iinclude -I$(LLHTTP_INC) -I/usr/include/postgresql -MMD -MP
LDLIBS  := -luv -lwslay -lhiredis -lpq -lcjson -lmbedtls -lmbedx509 -lmbedcrypto -lpthread -lm

# Layers, each a folder depending only on those before it: base <- net <- proto <- app, with
# svc (Redis, database) beside proto (docs/architecture.md; test/layers.sh checks it).
LAYERS  := base net proto svc app
LIB_SRC := $(filter-out src/app/main.c,$(foreach l,$(LAYERS),$(wildcard src/$(l)/*.c)))
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/migrations.o
SQL     := $(sort $(wildcard sql/[0-9]*.sql))
LLHTTP_OBJ := $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o
LIB     := $(BUILD)/libparley.a

# `parleyd --version` (the file VERSION; config.o is rebuilt when it changes).
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
$(BUILD)/obj/base/config.o: CPPFLAGS += -DPL_VERSION='"$(VERSION)"'
$(BUILD)/obj/base/config.o: VERSION

UNIT_SRC := $(wildcard test/unit/test_*.c) $(foreach l,$(LAYERS),$(wildcard test/unit/$(l)/test_*.c))
UNIT_BIN := $(addprefix $(BUILD)/test/,$(notdir $(UNIT_SRC:.c=)))

.PHONY: all deps run test unit fuzz bench bench-big clean services-start services-stop format install cluster cluster-stop
.DEFAULT_GOAL := all

all: $(BUILD)/parleyd

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# The migrations travel inside the binary (parleyd --migrate).
$(BUILD)/gen/migrations.c: $(SQL) sql/embed.sh
	@mkdir -p $(dir $@)
	sql/embed.sh $(SQL) > $@

$(BUILD)/obj/migrations.o: $(BUILD)/gen/migrations.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# llhttp is generated C; it is not ours to keep warning-free. LLHTTP_CFLAGS: the fuzzing
# build instruments it too (test/fuzz/fuzz.mk).
LLHTTP_CFLAGS ?= -O2 -g
$(BUILD)/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) -I$(LLHTTP_INC) $(LLHTTP_CFLAGS) -w -c -o $@ $<

$(LIB): $(LIB_OBJ) $(LLHTTP_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/parleyd: $(BUILD)/obj/app/main.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests: test/unit/<layer>/test_x.c -> build/test/test_x (one flat directory for test/run).
define unit_rule
$(BUILD)/test/$(notdir $(1:.c=)): $(1) test/unit/unit.h $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CPPFLAGS) -Itest/unit $$(CFLAGS) -o $$@ $$< $$(LIB) $$(LDLIBS)
endef
$(foreach u,$(UNIT_SRC),$(eval $(call unit_rule,$(u))))

unit: $(UNIT_BIN)

-include bench/bench.mk
-include test/fuzz/fuzz.mk

deps:
	@deploy/dev/deps.sh

services-start:
	@deploy/dev/services.sh start

services-stop:
	@deploy/dev/services.sh stop

# Set-up, then parleyd in the foreground on :8080 with dev credentials.
run: deps
	@$(MAKE) --no-print-directory all
	@deploy/dev/run.sh

# Set-up, then N instances (default 3) behind nginx, in the background (deploy/cluster;
# docs/operations.md): `make cluster N=5`, `make cluster-stop`; `make cluster REDIS=cluster`:
# the instances on a local Redis Cluster (3 masters, 1 replica each) in cluster mode.
N ?= 3
REDIS ?=
cluster: deps
	@$(MAKE) --no-print-directory all
	@PARLEY_CLUSTER_REDIS=$(REDIS) deploy/cluster start $(N)

cluster-stop:
	@deploy/cluster stop

# Set-up, then every test; the last line is `N passed, N failed`.
test: deps
	@$(MAKE) --no-print-directory all unit
	@test/run

# `make install [PREFIX=/usr/local] [DESTDIR=]`: the binary, the systemd unit (its paths
# rewritten to these), an environment file template and the web app (docs/operations.md).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DATADIR    ?= $(PREFIX)/share/parley

install: $(BUILD)/parleyd
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/parley $(DESTDIR)$(DATADIR)
	install -m 755 $(BUILD)/parleyd $(DESTDIR)$(BINDIR)/parleyd
	sed -e 's|/usr/local/bin/parleyd|$(BINDIR)/parleyd|g' -e 's|/etc/parley/|$(SYSCONFDIR)/parley/|g' \
	    deploy/parleyd.service > $(DESTDIR)$(UNITDIR)/parleyd.service
	chmod 644 $(DESTDIR)$(UNITDIR)/parleyd.service
	install -m 644 deploy/parleyd.env.example $(DESTDIR)$(SYSCONFDIR)/parley/parleyd.env.example
	rm -rf $(DESTDIR)$(DATADIR)/web
	cp -R web $(DESTDIR)$(DATADIR)/web
	rm -rf $(DESTDIR)$(DATADIR)/web/test $(DESTDIR)$(DATADIR)/web/node_modules
	chmod -R u=rwX,go=rX $(DESTDIR)$(DATADIR)/web

format:
	clang-format -i src/*/*.c include/parley/*/*.h test/unit/*.c test/unit/*/*.c test/unit/*.h

clean:
	rm -rf $(BUILD)

-include $(wildcard $(BUILD)/obj/*/*.d $(BUILD)/test/*.d)
