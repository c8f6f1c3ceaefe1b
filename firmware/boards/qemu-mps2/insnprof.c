/* QEMU TCG plugin (API v1, QEMU 7.2): executed guest instructions per translation block.
   On exit writes "vaddr n_insns execs" per executed block to the file named by the plugin
   argument `out=PATH` (default insnprof.txt); firmware/insnprof maps the addresses to
   functions (addr2line -i, so LTO-inlined code is attributed to its source function).
   Declarations copied from include/qemu/qemu-plugin.h (stable subset). */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb; typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
struct rec { uint64_t vaddr, n, execs; struct rec *next; };
static struct rec *head;
static char out_path[512] = "insnprof.txt";
static int written;
static void dump(void) {
    if (written) return;
    written = 1;
    FILE *f = fopen(out_path, "w");
    if (!f) { fprintf(stderr, "[insnprof] cannot write %s\n", out_path); return; }
    for (struct rec *r = head; r; r = r->next)
        if (r->execs) fprintf(f, "%llx %llu %llu\n", (unsigned long long)r->vaddr,
                              (unsigned long long)r->n, (unsigned long long)r->execs);
    fclose(f);
}
static void on_exit_cb(qemu_plugin_id_t id, void *p) { dump(); }
__attribute__((destructor)) static void fini(void) { dump(); }
static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct rec *r = calloc(1, sizeof *r);
    if (!r) return;
    r->vaddr = qemu_plugin_tb_vaddr(tb);
    r->n = qemu_plugin_tb_n_insns(tb);
    r->next = head;
    head = r;
    /* One inline add of 1 per execution; the block's size multiplies at dump time. */
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &r->execs, 1);
}
__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
