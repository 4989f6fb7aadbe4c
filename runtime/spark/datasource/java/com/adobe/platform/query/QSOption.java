package com.adobe.platform.query;

/**
 * The option names of the platform's Spark data source, as recipes reach them through py4j
 * ({@code spark.sparkContext._jvm.com.adobe.platform.query.QSOption.datasetId()}).
 *
 * Part of mlinstance-runtime's local data source (compiled from source on first use); only the
 * names are the platform's. The credential options are accepted and ignored: local data sets
 * need none, and their values are never logged.
 */
public final class QSOption {
    private QSOption() {}

    public static String userToken() { return "user-token"; }
    public static String serviceToken() { return "service-token"; }
    public static String imsOrg() { return "ims-org"; }
    public static String apiKey() { return "api-key"; }
    /** {@code "interactive"} or {@code "batch"}: both read the same local files. */
    public static String mode() { return "mode"; }
    public static String datasetId() { return "dataset-id"; }
    public static String sandboxName() { return "sandbox-name"; }
}
