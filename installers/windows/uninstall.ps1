<#
.SYNOPSIS
  Removes re6mesh: the Windows service (`mesh service uninstall`), Program Files\re6mesh and its
  PATH entry. The state directory %ProgramData%\re6mesh (the node's key and certificate) stays
  unless -Purge is given.
#>
param(
    [string]$Destination = (Join-Path $env:ProgramFiles "re6mesh"),
    # Also delete the state directory (this machine leaves the network for good).
    [switch]$Purge
)
$ErrorActionPreference = "Stop"
$mesh = Join-Path $Destination "mesh.exe"
if (Test-Path $mesh) {
    & $mesh service uninstall
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}
Remove-Item -Recurse -Force -Path $Destination -ErrorAction SilentlyContinue
$path = [Environment]::GetEnvironmentVariable("Path", "Machine")
$kept = ($path -split ";") | Where-Object { $_ -and $_ -ne $Destination }
[Environment]::SetEnvironmentVariable("Path", ($kept -join ";"), "Machine")
if ($Purge) {
    Remove-Item -Recurse -Force -Path (Join-Path $env:ProgramData "re6mesh") -ErrorAction SilentlyContinue
}
Write-Host "re6mesh removed."
