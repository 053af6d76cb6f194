/* tp_tls_device_config.h - what a module's mbedTLS build changes from
 * Debian's configuration (issue 13). `make size` compiles the device set
 * against Debian's headers with this file as MBEDTLS_USER_CONFIG_FILE: a
 * module has no pthreads, no sockets and no files. A firmware gives its own
 * full mbedTLS configuration; this is the minimum tp_tls.c needs to build
 * without an OS. */
#undef MBEDTLS_THREADING_C
#undef MBEDTLS_THREADING_PTHREAD
#undef MBEDTLS_NET_C
#undef MBEDTLS_TIMING_C
#undef MBEDTLS_FS_IO
#undef MBEDTLS_PSA_ITS_FILE_C
#undef MBEDTLS_PSA_CRYPTO_STORAGE_C
#undef MBEDTLS_HAVEGE_C
