package mlkube.torchserve;

import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.ProtectionDomain;

/**
 * A Java agent (-javaagent in TorchServe's vmargs) that loads mlkube's OpenInferenceProtocolRequestHandler in
 * place of TorchServe 0.12's: the frontend's handler chain has no other place for the protocol's model
 * endpoints (a serving-SDK endpoint would take every /v2 path, infer included, and in 0.12 it reads a POST
 * body only after Netty has released it).
 */
public final class Agent {
    static final String TARGET = "org/pytorch/serve/http/api/rest/OpenInferenceProtocolRequestHandler";
    static final String REPLACEMENT = "/mlkube/torchserve/OpenInferenceProtocolRequestHandler.bytes";

    private Agent() {}

    public static void premain(String args, Instrumentation instrumentation) throws IOException {
        byte[] replacement;
        try (InputStream in = Agent.class.getResourceAsStream(REPLACEMENT)) {
            if (in == null) {
                throw new IOException("mlkube's agent jar lacks " + REPLACEMENT);
            }
            replacement = in.readAllBytes();
        }
        instrumentation.addTransformer(
                new ClassFileTransformer() {
                    @Override
                    public byte[] transform(
                            ClassLoader loader,
                            String name,
                            Class<?> redefined,
                            ProtectionDomain domain,
                            byte[] original) {
                        return TARGET.equals(name) ? replacement.clone() : null;
                    }
                });
    }
}
