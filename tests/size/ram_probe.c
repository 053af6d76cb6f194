/* ram_probe.c - the RAM of the service's objects in the device profile,
 * measured by the cross-compiler: each ram_<name> array is as large as the
 * object it names, and `make ram` reads the sizes with arm-none-eabi-nm
 * (tests/size/size_report.py). Never linked into anything. */
#include "svc_core.h"

#define PROBE(name, type) char ram_##name[sizeof(type)]
PROBE(svc_t, svc_t);             /* the service: both partitions, tables */
PROBE(svc_conn_t, svc_conn_t);   /* one connection */
PROBE(svc_part_t, svc_part_t);   /* one partition (fs + manifest) */
PROBE(cfs_t, cfs_t);
PROBE(cfs_work_t, cfs_work_t);   /* one in svc_t, for both partitions */
PROBE(man_t, man_t);
PROBE(txn_t, txn_t);             /* two in svc_t: updates and copies */
PROBE(txn_index_t, txn_index_t);
PROBE(svc_job_t, svc_job_t);
PROBE(svc_copy_t, svc_copy_t);
PROBE(cellar_Request, cellar_Request);
PROBE(cellar_Response, cellar_Response);
PROBE(svc_handle_t, svc_handle_t);
PROBE(svc_path_t, svc_path_t);
PROBE(codec_scan_t, codec_scan_t);
PROBE(csha_t, csha_t);
PROBE(conn_inbuf, ((svc_conn_t *)0)->inbuf);
PROBE(conn_out, ((svc_conn_t *)0)->out);
PROBE(conn_handles, ((svc_conn_t *)0)->h);
PROBE(svc_scratch, ((svc_t *)0)->scratch);
PROBE(svc_problems, ((svc_t *)0)->problems);
PROBE(txn_work_t, txn_work_t);   /* issue 14: the scratch tx and cp share */
PROBE(man_entry_t, man_entry_t);
