//! The `mercenary.v1.Pricing` service: messages, server and client, written by hand in the shape
//! `tonic-build` generates, so the example needs neither `protoc` nor a build script.
//!
//! The protocol it implements:
//!
//! ```proto
//! syntax = "proto3";
//! package mercenary.v1;
//!
//! service Pricing {
//!   rpc Quote(QuoteRequest) returns (QuoteReply);
//!   rpc Watch(QuoteRequest) returns (stream QuoteReply);
//! }
//! message QuoteRequest { string item = 1; }
//! message QuoteReply { uint64 cents = 1; }
//! ```
//!
//! Shared by `examples/grpc.rs` (the server) and `tests/integration/grpc.rs` (the client), each
//! including it with `#[path]`; each uses one half, hence the `dead_code` allowances.

/// The request of both methods: the item to price.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct QuoteRequest {
    /// The item's name.
    #[prost(string, tag = "1")]
    pub item: ::prost::alloc::string::String,
}

/// A price, in cents.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct QuoteReply {
    /// The price in cents.
    #[prost(uint64, tag = "1")]
    pub cents: u64,
}

/// The client of `mercenary.v1.Pricing`.
#[allow(
    unused_variables,
    dead_code,
    missing_docs,
    clippy::wildcard_imports,
    clippy::let_unit_value
)]
pub mod pricing_client {
    use tonic::codegen::http::Uri;
    use tonic::codegen::*;

    /// Prices items, once (`Quote`) or as a stream of updates (`Watch`).
    #[derive(Debug, Clone)]
    pub struct PricingClient<T> {
        inner: tonic::client::Grpc<T>,
    }

    impl PricingClient<tonic::transport::Channel> {
        /// Attempt to create a new client by connecting to a given endpoint.
        pub async fn connect<D>(dst: D) -> Result<Self, tonic::transport::Error>
        where
            D: TryInto<tonic::transport::Endpoint>,
            D::Error: Into<StdError>,
        {
            let conn = tonic::transport::Endpoint::new(dst)?.connect().await?;
            Ok(Self::new(conn))
        }
    }

    impl<T> PricingClient<T>
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<StdError>,
        T::ResponseBody: Body<Data = Bytes> + std::marker::Send + 'static,
        <T::ResponseBody as Body>::Error: Into<StdError> + std::marker::Send,
    {
        pub fn new(inner: T) -> Self {
            let inner = tonic::client::Grpc::new(inner);
            Self { inner }
        }

        pub fn with_origin(inner: T, origin: Uri) -> Self {
            let inner = tonic::client::Grpc::with_origin(inner, origin);
            Self { inner }
        }

        pub fn with_interceptor<F>(
            inner: T,
            interceptor: F,
        ) -> PricingClient<InterceptedService<T, F>>
        where
            F: tonic::service::Interceptor,
            T::ResponseBody: Default,
            T: tonic::codegen::Service<
                    http::Request<tonic::body::Body>,
                    Response = http::Response<
                        <T as tonic::client::GrpcService<tonic::body::Body>>::ResponseBody,
                    >,
                >,
            <T as tonic::codegen::Service<http::Request<tonic::body::Body>>>::Error:
                Into<StdError> + std::marker::Send + std::marker::Sync,
        {
            PricingClient::new(InterceptedService::new(inner, interceptor))
        }

        /// Compress requests with the given encoding.
        #[must_use]
        pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
            self.inner = self.inner.send_compressed(encoding);
            self
        }

        /// Enable decompressing responses.
        #[must_use]
        pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
            self.inner = self.inner.accept_compressed(encoding);
            self
        }

        /// Limits the maximum size of a decoded message. Default: `4MB`.
        #[must_use]
        pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
            self.inner = self.inner.max_decoding_message_size(limit);
            self
        }

        /// Limits the maximum size of an encoded message. Default: `usize::MAX`.
        #[must_use]
        pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
            self.inner = self.inner.max_encoding_message_size(limit);
            self
        }

        /// Prices one item.
        pub async fn quote(
            &mut self,
            request: impl tonic::IntoRequest<super::QuoteRequest>,
        ) -> std::result::Result<tonic::Response<super::QuoteReply>, tonic::Status> {
            self.inner.ready().await.map_err(|e| {
                tonic::Status::unknown(format!("Service was not ready: {}", e.into()))
            })?;
            let codec = tonic_prost::ProstCodec::default();
            let path = http::uri::PathAndQuery::from_static("/mercenary.v1.Pricing/Quote");
            let mut req = request.into_request();
            req.extensions_mut()
                .insert(GrpcMethod::new("mercenary.v1.Pricing", "Quote"));
            self.inner.unary(req, path, codec).await
        }

        /// Streams an item's price as it changes.
        pub async fn watch(
            &mut self,
            request: impl tonic::IntoRequest<super::QuoteRequest>,
        ) -> std::result::Result<
            tonic::Response<tonic::codec::Streaming<super::QuoteReply>>,
            tonic::Status,
        > {
            self.inner.ready().await.map_err(|e| {
                tonic::Status::unknown(format!("Service was not ready: {}", e.into()))
            })?;
            let codec = tonic_prost::ProstCodec::default();
            let path = http::uri::PathAndQuery::from_static("/mercenary.v1.Pricing/Watch");
            let mut req = request.into_request();
            req.extensions_mut()
                .insert(GrpcMethod::new("mercenary.v1.Pricing", "Watch"));
            self.inner.server_streaming(req, path, codec).await
        }
    }
}

/// The server of `mercenary.v1.Pricing`.
#[allow(
    unused_variables,
    dead_code,
    missing_docs,
    clippy::wildcard_imports,
    clippy::let_unit_value
)]
pub mod pricing_server {
    use tonic::codegen::*;

    /// The methods a `mercenary.v1.Pricing` server implements.
    #[async_trait]
    pub trait Pricing: std::marker::Send + std::marker::Sync + 'static {
        /// Prices one item.
        async fn quote(
            &self,
            request: tonic::Request<super::QuoteRequest>,
        ) -> std::result::Result<tonic::Response<super::QuoteReply>, tonic::Status>;

        /// Server streaming response type for the Watch method.
        type WatchStream: tonic::codegen::tokio_stream::Stream<
                Item = std::result::Result<super::QuoteReply, tonic::Status>,
            > + std::marker::Send
            + 'static;

        /// Streams an item's price as it changes.
        async fn watch(
            &self,
            request: tonic::Request<super::QuoteRequest>,
        ) -> std::result::Result<tonic::Response<Self::WatchStream>, tonic::Status>;
    }

    /// Serves a [`Pricing`] implementation.
    #[derive(Debug)]
    pub struct PricingServer<T> {
        inner: Arc<T>,
        accept_compression_encodings: EnabledCompressionEncodings,
        send_compression_encodings: EnabledCompressionEncodings,
        max_decoding_message_size: Option<usize>,
        max_encoding_message_size: Option<usize>,
    }

    impl<T> PricingServer<T> {
        pub fn new(inner: T) -> Self {
            Self::from_arc(Arc::new(inner))
        }

        pub fn from_arc(inner: Arc<T>) -> Self {
            Self {
                inner,
                accept_compression_encodings: Default::default(),
                send_compression_encodings: Default::default(),
                max_decoding_message_size: None,
                max_encoding_message_size: None,
            }
        }

        pub fn with_interceptor<F>(inner: T, interceptor: F) -> InterceptedService<Self, F>
        where
            F: tonic::service::Interceptor,
        {
            InterceptedService::new(Self::new(inner), interceptor)
        }

        /// Enable decompressing requests with the given encoding.
        #[must_use]
        pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
            self.accept_compression_encodings.enable(encoding);
            self
        }

        /// Compress responses with the given encoding, if the client supports it.
        #[must_use]
        pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
            self.send_compression_encodings.enable(encoding);
            self
        }

        /// Limits the maximum size of a decoded message. Default: `4MB`.
        #[must_use]
        pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
            self.max_decoding_message_size = Some(limit);
            self
        }

        /// Limits the maximum size of an encoded message. Default: `usize::MAX`.
        #[must_use]
        pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
            self.max_encoding_message_size = Some(limit);
            self
        }
    }

    impl<T, B> tonic::codegen::Service<http::Request<B>> for PricingServer<T>
    where
        T: Pricing,
        B: Body + std::marker::Send + 'static,
        B::Error: Into<StdError> + std::marker::Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(
            &mut self,
            _cx: &mut Context<'_>,
        ) -> Poll<std::result::Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            match req.uri().path() {
                "/mercenary.v1.Pricing/Quote" => {
                    #[allow(non_camel_case_types)]
                    struct QuoteSvc<T: Pricing>(pub Arc<T>);
                    impl<T: Pricing> tonic::server::UnaryService<super::QuoteRequest> for QuoteSvc<T> {
                        type Response = super::QuoteReply;
                        type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;
                        fn call(
                            &mut self,
                            request: tonic::Request<super::QuoteRequest>,
                        ) -> Self::Future {
                            let inner = Arc::clone(&self.0);
                            let fut = async move { <T as Pricing>::quote(&inner, request).await };
                            Box::pin(fut)
                        }
                    }
                    let accept_compression_encodings = self.accept_compression_encodings;
                    let send_compression_encodings = self.send_compression_encodings;
                    let max_decoding_message_size = self.max_decoding_message_size;
                    let max_encoding_message_size = self.max_encoding_message_size;
                    let inner = self.inner.clone();
                    let fut = async move {
                        let method = QuoteSvc(inner);
                        let codec = tonic_prost::ProstCodec::default();
                        let mut grpc = tonic::server::Grpc::new(codec)
                            .apply_compression_config(
                                accept_compression_encodings,
                                send_compression_encodings,
                            )
                            .apply_max_message_size_config(
                                max_decoding_message_size,
                                max_encoding_message_size,
                            );
                        let res = grpc.unary(method, req).await;
                        Ok(res)
                    };
                    Box::pin(fut)
                }
                "/mercenary.v1.Pricing/Watch" => {
                    #[allow(non_camel_case_types)]
                    struct WatchSvc<T: Pricing>(pub Arc<T>);
                    impl<T: Pricing> tonic::server::ServerStreamingService<super::QuoteRequest> for WatchSvc<T> {
                        type Response = super::QuoteReply;
                        type ResponseStream = T::WatchStream;
                        type Future =
                            BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;
                        fn call(
                            &mut self,
                            request: tonic::Request<super::QuoteRequest>,
                        ) -> Self::Future {
                            let inner = Arc::clone(&self.0);
                            let fut = async move { <T as Pricing>::watch(&inner, request).await };
                            Box::pin(fut)
                        }
                    }
                    let accept_compression_encodings = self.accept_compression_encodings;
                    let send_compression_encodings = self.send_compression_encodings;
                    let max_decoding_message_size = self.max_decoding_message_size;
                    let max_encoding_message_size = self.max_encoding_message_size;
                    let inner = self.inner.clone();
                    let fut = async move {
                        let method = WatchSvc(inner);
                        let codec = tonic_prost::ProstCodec::default();
                        let mut grpc = tonic::server::Grpc::new(codec)
                            .apply_compression_config(
                                accept_compression_encodings,
                                send_compression_encodings,
                            )
                            .apply_max_message_size_config(
                                max_decoding_message_size,
                                max_encoding_message_size,
                            );
                        let res = grpc.server_streaming(method, req).await;
                        Ok(res)
                    };
                    Box::pin(fut)
                }
                _ => Box::pin(async move {
                    let mut response = http::Response::new(tonic::body::Body::default());
                    let headers = response.headers_mut();
                    headers.insert(
                        tonic::Status::GRPC_STATUS,
                        (tonic::Code::Unimplemented as i32).into(),
                    );
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        tonic::metadata::GRPC_CONTENT_TYPE,
                    );
                    Ok(response)
                }),
            }
        }
    }

    impl<T> Clone for PricingServer<T> {
        fn clone(&self) -> Self {
            let inner = self.inner.clone();
            Self {
                inner,
                accept_compression_encodings: self.accept_compression_encodings,
                send_compression_encodings: self.send_compression_encodings,
                max_decoding_message_size: self.max_decoding_message_size,
                max_encoding_message_size: self.max_encoding_message_size,
            }
        }
    }

    /// Generated gRPC service name.
    pub const SERVICE_NAME: &str = "mercenary.v1.Pricing";

    impl<T> tonic::server::NamedService for PricingServer<T> {
        const NAME: &'static str = SERVICE_NAME;
    }
}
