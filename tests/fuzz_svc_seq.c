/* fuzz_svc_seq.c - libFuzzer target over request sequences: the input is
 * read as a sequence of choices (request kind, connection, paths, offsets,
 * sizes, bundle entries, restarts, power cuts at a flash operation) that
 * drive the in-process service over two connections, exactly as the model
 * test does (tests/test_svc_model.c, compiled in here), and every answer
 * is checked against its model. After each restart: the service starts,
 * fsck passes on both partitions, the trees and manifests match the model
 * and Verify names what the model expects. Any difference aborts (with
 * the last requests on stderr). The rig has the raw partitions, the /sd
 * card and the ACL of test_svc_model, whose steps include their requests.
 *
 * SVC_MODEL_SKIP=sparse,conflict,... keeps known, unfixed bugs out of the
 * way (the --skip-known list of test_svc_model); unset (or "none"), it
 * checks everything. */
#define SVC_MODEL_FUZZ 1
#include "test_svc_model.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return svc_model_fuzz(data, size);
}
