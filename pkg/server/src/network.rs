//! Publishing the cluster network settings for agents: the ConfigMap
//! `kube-system/k8slite-network` ([`k8slite_api::cluster_network`]), replaced at every start so
//! that changed server flags reach agents when they next start.

use k8s_openapi::api::core::v1::ConfigMap;
use k8slite_api::cluster_network::{CONFIG_MAP, ClusterNetwork, NAMESPACE};
use kube::api::{Api, PostParams};

/// Create or replace the ConfigMap with `settings`.
pub async fn publish(client: kube::Client, settings: &ClusterNetwork) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let mut want = settings.to_config_map();
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match api.get_opt(CONFIG_MAP).await? {
            None => api.create(&PostParams::default(), &want).await,
            Some(current) if current.data == want.data => return Ok(()),
            Some(current) => {
                want.metadata.resource_version = current.metadata.resource_version.clone();
                api.replace(CONFIG_MAP, &PostParams::default(), &want).await
            }
        };
        match result {
            Ok(_) => return Ok(()),
            // Another server wrote it in between: read it again.
            Err(kube::Error::Api(s)) if s.code == 409 && tries < 5 => {}
            Err(e) => return Err(e),
        }
    }
}
